//! The WebRTC shell: one peer connection per browser call (the `webrtc`
//! crate: ICE, DTLS, SRTP, RTP), seen by the call task as a [`Transport`].
//!
//! [`answer`] takes the browser's SDP offer, builds the peer (Opus, and
//! telephone-events if offered; one send track), waits a bounded time for
//! ICE gathering and returns the SDP answer with a [`WebRtcTransport`].
//! RTP in becomes the codec's framed messages (`carrier::webrtc`): the
//! remote track's reader task tags each packet by payload type and queues it
//! (bounded; a full queue drops the packet, counted — the codec conceals the
//! gap). Opus packets out get an RTP header here (sequence, a timestamp that
//! follows the wall clock across the agent's silences, the marker bit on the
//! first packet of a talk spurt) and go to a writer task. No lock is held
//! across an await; the call task only touches channels.
//!
//! Invariants: every task this module starts ends when the call's transport
//! is closed or dropped (the peer connection is closed with it); nothing here
//! blocks the call task.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::carrier::webrtc::{KIND_DTMF, KIND_OPUS, RTP_FRAME, StartMessage};
use crate::carrier::{MsgKind, WireOut};
use crate::runtime::transport::{Received, Text, Transport, WriteError};

/// Payload types we offer when the browser lets us choose (it usually does not).
const OPUS_PT: u8 = 111;
const DTMF_PT: u8 = 110;
/// Inbound packets queued for the call task (≈ 1.3 s of 20 ms packets).
const INBOUND_QUEUE: usize = 64;
/// Outbound packets queued for the writer task.
const OUTBOUND_QUEUE: usize = 32;
/// A pause longer than this in the agent's audio starts a new talk spurt.
const SPURT_GAP: Duration = Duration::from_millis(60);

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The SDP has no audio we can take.
    #[error("the offer has no Opus audio")]
    NoOpus,
    /// The WebRTC stack refused the offer or failed to answer it.
    #[error("webrtc: {0}")]
    Stack(String),
    /// ICE gathering did not finish in time.
    #[error("ICE gathering did not complete in {0:?}")]
    GatherTimeout(Duration),
    /// Every UDP port of `webrtc.udp_port_min..=udp_port_max` is in use.
    #[error("no UDP port of the configured range is free")]
    NoPort,
}

impl From<webrtc::error::Error> for OfferError {
    fn from(e: webrtc::error::Error) -> Self {
        OfferError::Stack(e.to_string())
    }
}

/// What a peer needs from the config.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Local UDP addresses to bind (port 0: ephemeral).
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers.
    pub ice_servers: Vec<RTCIceServer>,
    /// Public addresses to advertise for the host candidates ("" none).
    pub public_ips: Vec<String>,
    /// Bound on ICE gathering before answering.
    pub gather_timeout: Duration,
    /// No media for this long: the browser is gone (`webrtc.media_timeout_ms`).
    pub media_timeout: Duration,
    /// The UDP port range calls lease from.
    pub ports: Arc<crate::runtime::udp_ports::UdpPorts>,
}

impl PeerSettings {
    /// From `[webrtc]` and the TURN credential.
    pub fn from_config(c: &crate::config::WebRtcConfig, turn_credential: Option<&str>) -> Self {
        let ice_servers = if c.ice_servers.is_empty() {
            Vec::new()
        } else {
            vec![RTCIceServer {
                urls: c.ice_servers.clone(),
                username: c.ice_username.clone(),
                credential: turn_credential.unwrap_or_default().to_string(),
            }]
        };
        Self {
            udp_addrs: c.udp_addrs.clone(),
            ice_servers,
            public_ips: c.public_ips.clone(),
            gather_timeout: Duration::from_millis(c.gather_timeout_ms),
            media_timeout: Duration::from_millis(c.media_timeout_ms),
            ports: crate::runtime::udp_ports::UdpPorts::new(c.udp_port_min, c.udp_port_max),
        }
    }
}

/// The payload types the answer settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Opus's payload type.
    pub opus: u8,
    /// telephone-event's (at 48 kHz), if negotiated.
    pub dtmf: Option<u8>,
}

/// Read the payload types of Opus and 48 kHz telephone-event from an SDP's
/// `a=rtpmap` lines (the answer: what both ends agreed on).
pub fn negotiated(sdp: &str) -> Option<Negotiated> {
    let mut opus = None;
    let mut dtmf = None;
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("a=rtpmap:") else { continue };
        let Some((pt, codec)) = rest.split_once(' ') else { continue };
        let Ok(pt) = pt.parse::<u8>() else { continue };
        let codec = codec.to_ascii_lowercase();
        if codec.starts_with("opus/48000") && opus.is_none() {
            opus = Some(pt);
        } else if codec.starts_with("telephone-event/48000") && dtmf.is_none() {
            dtmf = Some(pt);
        }
    }
    Some(Negotiated { opus: opus?, dtmf })
}

fn media_engine() -> Result<MediaEngine, OfferError> {
    let mut m = MediaEngine::default();
    let codec = |mime: &str, channels: u16, fmtp: &str, pt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 48_000,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_TELEPHONE_EVENT};
    m.register_codec(codec(MIME_TYPE_OPUS, 2, "minptime=10;useinbandfec=1", OPUS_PT), RtpCodecKind::Audio)?;
    m.register_codec(codec(MIME_TYPE_TELEPHONE_EVENT, 1, "0-16", DTMF_PT), RtpCodecKind::Audio)?;
    Ok(m)
}

/// What the peer's callbacks feed.
struct Events {
    inbound: mpsc::Sender<Received>,
    gathered: mpsc::Sender<()>,
    dtmf_pt: std::sync::OnceLock<Option<u8>>,
    dropped: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(?state, "webrtc peer state");
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            // The call task sees the end of the stream (reserved capacity: a
            // try_send could be refused by a full queue; this one waits).
            let _ = self.inbound.send(Received::Closed).await;
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await != RtpCodecKind::Audio {
            return;
        }
        let inbound = self.inbound.clone();
        let dtmf = self.dtmf_pt.get().copied().flatten();
        let dropped = self.dropped.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let kind = if Some(p.header.payload_type) == dtmf { KIND_DTMF } else { KIND_OPUS };
                        let mut b = BytesMut::with_capacity(5 + p.payload.len());
                        b.put_u8(kind);
                        b.put_u32(p.header.timestamp);
                        b.extend_from_slice(&p.payload);
                        match inbound.try_send(Received::Binary(b.freeze())) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// Answer `offer_sdp`: the SDP answer and the call's transport, whose first
/// message is `start`.
pub async fn answer(
    offer_sdp: &str,
    settings: &PeerSettings,
    start: StartMessage,
) -> Result<(String, WebRtcTransport), OfferError> {
    let offer = RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(|e| OfferError::Stack(e.to_string()))?;
    let mut media = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let config = RTCConfigurationBuilder::new().with_ice_servers(settings.ice_servers.clone()).build();
    let mut setting = SettingEngineBuilder::new();
    if !settings.public_ips.is_empty() {
        setting =
            setting.with_nat_1to1_ips(settings.public_ips.clone(), webrtc::peer_connection::RTCIceCandidateType::Host);
    }
    let (udp_addrs, port) = settings.ports.lease(&settings.udp_addrs).ok_or(OfferError::NoPort)?;
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE + 2);
    let (gather_tx, mut gather_rx) = mpsc::channel(1);
    let dropped = Arc::new(AtomicU64::new(0));
    let events =
        Arc::new(Events { inbound: in_tx, gathered: gather_tx, dtmf_pt: Default::default(), dropped: dropped.clone() });
    let peer = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(setting.build())
        .with_interceptor_registry(registry)
        .with_handler(events.clone())
        .with_udp_addrs(udp_addrs)
        .build()
        .await?;
    let peer: Arc<dyn PeerConnection> = Arc::new(peer);
    let ssrc: u32 = rand_u32();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "callbridge".to_owned(),
        "agent".to_owned(),
        "agent voice".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec {
                mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    let built = async {
        peer.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        peer.set_remote_description(offer).await?;
        let answer = peer.create_answer(None).await?;
        peer.set_local_description(answer).await?;
        Ok::<_, OfferError>(())
    };
    if let Err(e) = built.await {
        let _ = peer.close().await;
        return Err(e);
    }
    if tokio::time::timeout(settings.gather_timeout, gather_rx.recv()).await.is_err() {
        let _ = peer.close().await;
        return Err(OfferError::GatherTimeout(settings.gather_timeout));
    }
    let Some(local) = peer.local_description().await else {
        let _ = peer.close().await;
        return Err(OfferError::Stack("no local description".into()));
    };
    debug_assert_eq!(local.sdp_type, RTCSdpType::Answer);
    let Some(neg) = negotiated(&local.sdp) else {
        let _ = peer.close().await;
        return Err(OfferError::NoOpus);
    };
    let _ = events.dtmf_pt.set(neg.dtmf);
    let mut start = start;
    start.dtmf = neg.dtmf.is_some();
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    tokio::spawn(write_loop(track, out_rx));
    let transport = WebRtcTransport {
        start: Some(serde_json::to_string(&start).map_err(|e| OfferError::Stack(e.to_string()))?),
        inbound: in_rx,
        outbound: out_tx,
        peer: Some(peer),
        rtp: RtpClock::new(ssrc, neg.opus, rand_u32() as u16, rand_u32()),
        dropped_in: dropped,
        dropped_out: 0,
        media_timeout: settings.media_timeout,
        _port: port,
    };
    Ok((local.sdp, transport))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the OS random source works");
    u32::from_ne_bytes(b)
}

async fn write_loop(track: Arc<TrackLocalStaticRTP>, mut rx: mpsc::Receiver<rtc::rtp::packet::Packet>) {
    while let Some(p) = rx.recv().await {
        if let Err(e) = track.write_rtp(p).await {
            debug!(error = %e, "webrtc write ended");
            break;
        }
    }
}

/// RTP header state of the agent's stream.
#[derive(Debug, Clone)]
pub struct RtpClock {
    ssrc: u32,
    pt: u8,
    seq: u16,
    /// Timestamp of the next packet.
    ts: u32,
    last: Option<Instant>,
}

impl RtpClock {
    /// A stream starting at `seq`, `ts`.
    pub fn new(ssrc: u32, pt: u8, seq: u16, ts: u32) -> Self {
        Self { ssrc, pt, seq, ts, last: None }
    }

    /// The header of the next 20 ms packet sent at `now`. After a pause the
    /// timestamp jumps by the pause (receivers time playout by it) and the
    /// marker bit starts the talk spurt.
    pub fn next(&mut self, now: Instant) -> rtc::rtp::header::Header {
        let marker = match self.last {
            None => true,
            Some(last) => {
                let gap = now.saturating_duration_since(last);
                if gap > SPURT_GAP {
                    let frames = (gap.as_micros() / 20_000) as u32;
                    self.ts = self.ts.wrapping_add(frames.saturating_sub(1) * RTP_FRAME);
                    true
                } else {
                    false
                }
            }
        };
        self.last = Some(now);
        let h = rtc::rtp::header::Header {
            version: 2,
            marker,
            payload_type: self.pt,
            sequence_number: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(RTP_FRAME);
        h
    }
}

/// A browser call's media, as the call task's transport.
pub struct WebRtcTransport {
    start: Option<String>,
    inbound: mpsc::Receiver<Received>,
    outbound: mpsc::Sender<rtc::rtp::packet::Packet>,
    peer: Option<Arc<dyn PeerConnection>>,
    rtp: RtpClock,
    dropped_in: Arc<AtomicU64>,
    dropped_out: u64,
    media_timeout: Duration,
    /// The call's UDP port, held until the transport drops.
    _port: Option<crate::runtime::udp_ports::PortLease>,
}

impl WebRtcTransport {
    /// Inbound packets dropped because the call task fell behind.
    pub fn dropped_inbound(&self) -> u64 {
        self.dropped_in.load(Ordering::Relaxed)
    }
}

impl Transport for WebRtcTransport {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        if let Some(s) = self.start.take() {
            return Poll::Ready(Received::Text(Text::Owned(s.into_boxed_str())));
        }
        match self.inbound.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            Poll::Ready(None) => Poll::Ready(Received::Closed),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write(&mut self, _cx: &mut Context<'_>, out: &mut WireOut) -> Poll<Result<(), WriteError>> {
        let now = Instant::now();
        while let Some(m) = out.pop() {
            if m.kind != MsgKind::Binary || m.data.first() != Some(&KIND_OPUS) {
                continue;
            }
            let packet = rtc::rtp::packet::Packet { header: self.rtp.next(now), payload: m.data.slice(1..) };
            match self.outbound.try_send(packet) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The writer is behind (never seen on loopback): audio is
                    // dropped rather than queued late.
                    self.dropped_out += 1;
                    metrics::counter!(crate::metrics::DROPPED_FRAMES, "kind" => "webrtc_send_full").increment(1);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Poll::Ready(Err(WriteError("webrtc peer closed".into())));
                }
            }
        }
        out.reclaim();
        Poll::Ready(Ok(()))
    }

    fn flush_pending(&self) -> bool {
        false
    }

    fn idle_timeout(&self) -> Option<Duration> {
        Some(self.media_timeout)
    }

    fn close(&mut self, _frame: Option<(u16, String)>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let peer = self.peer.take();
        Box::pin(async move {
            if let Some(p) = peer
                && let Err(e) = p.close().await
            {
                warn!(error = %e, "closing the webrtc peer");
            }
        })
    }
}

impl Drop for WebRtcTransport {
    fn drop(&mut self) {
        if let Some(p) = self.peer.take() {
            tokio::spawn(async move {
                let _ = p.close().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_come_from_the_answer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 110 126\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=rtpmap:126 telephone-event/8000\r\na=rtpmap:110 telephone-event/48000\r\n";
        assert_eq!(negotiated(sdp), Some(Negotiated { opus: 111, dtmf: Some(110) }));
        assert_eq!(negotiated("a=rtpmap:0 PCMU/8000\r\n"), None);
    }

    #[test]
    fn the_rtp_clock_follows_pauses_and_marks_talk_spurts() {
        let t0 = Instant::now();
        let mut c = RtpClock::new(7, 111, 65_535, 1000);
        let a = c.next(t0);
        let b = c.next(t0 + Duration::from_millis(20));
        assert!(a.marker && !b.marker);
        assert_eq!((a.sequence_number, b.sequence_number), (65_535, 0));
        assert_eq!(b.timestamp - a.timestamp, RTP_FRAME);
        // 1 s of silence, then the next spurt: the timestamp moves on by the pause.
        let d = c.next(t0 + Duration::from_millis(1020));
        assert!(d.marker);
        assert_eq!(d.timestamp - b.timestamp, 50 * RTP_FRAME);
    }
}
