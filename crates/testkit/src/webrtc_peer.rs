//! A browser's side of a callbridge WebRTC call, in Rust (the `webrtc`
//! crate as the client peer; no browser): it offers Opus (and
//! telephone-events), POSTs the offer to `/webrtc/offer`, sends caller audio
//! as RTP paced by its caller, and decodes what the agent sends.
//!
//! Received agent audio is kept as one RMS level per 20 ms packet with its
//! arrival time, which is what tests and the loadtest measure (when the
//! agent's voice started and stopped).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, register_default_interceptors,
};

/// Samples in 20 ms at 48 kHz.
pub const FRAME: usize = 960;
const OPUS_PT: u8 = 111;
/// Agent packets kept (50 a second: two minutes).
const HEARD_KEPT: usize = 6000;
const DTMF_PT: u8 = 110;

/// One agent packet as the peer heard it.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    /// When it arrived.
    pub at: Instant,
    /// Its RMS level (full scale 32768).
    pub rms: f32,
}

/// A summary of agent packets over a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Loudness {
    /// Packets heard.
    pub packets: usize,
    /// Of which loud.
    pub loud: usize,
    /// First loud packet's arrival.
    pub first_loud: Option<Instant>,
    /// Last loud packet's arrival.
    pub last_loud: Option<Instant>,
}

/// What the peer shares with its tasks.
#[derive(Debug, Default)]
pub struct Shared {
    /// Agent packets in arrival order.
    pub heard: Vec<Heard>,
    /// Packets that failed to decode.
    pub bad: u64,
    /// The connection reached `connected`.
    pub connected: bool,
    /// The connection failed or closed.
    pub ended: bool,
}

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    Stack(String),
    /// The server refused the offer.
    #[error("offer refused: HTTP {status}: {body}")]
    Refused {
        /// status
        status: u16,
        /// body
        body: String,
    },
    /// HTTP failed.
    #[error("http: {0}")]
    Http(String),
    /// Opus failed.
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
}

impl From<webrtc::error::Error> for PeerError {
    fn from(e: webrtc::error::Error) -> Self {
        PeerError::Stack(e.to_string())
    }
}

struct Handler {
    shared: Arc<Mutex<Shared>>,
    gathered: tokio::sync::mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let mut s = self.shared.lock().expect("peer state");
        match state {
            RTCPeerConnectionState::Connected => s.connected = true,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed | RTCPeerConnectionState::Disconnected => {
                s.ended = true
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(mut dec) = Decoder::new(SampleRate::Hz48000, Channels::Mono) else { return };
            let mut pcm = vec![0i16; 5760];
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) if p.header.payload_type == OPUS_PT => {
                        let decoded = audiopus::packet::Packet::try_from(&p.payload[..])
                            .and_then(|pk| dec.decode(Some(pk), (&mut pcm[..]).try_into()?, false));
                        let mut s = shared.lock().expect("peer state");
                        match decoded {
                            Ok(n) => {
                                let sum: f64 = pcm[..n].iter().map(|&x| f64::from(x).powi(2)).sum();
                                let rms = (sum / n.max(1) as f64).sqrt() as f32;
                                s.heard.push(Heard { at: Instant::now(), rms });
                                // Bounded: the last ~2 minutes are enough for any measurement.
                                if s.heard.len() > HEARD_KEPT * 2 {
                                    let drop = s.heard.len() - HEARD_KEPT;
                                    s.heard.drain(..drop);
                                }
                            }
                            Err(_) => s.bad += 1,
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A caller fixture (`fixtures/audio/{name}`, run from the repository root)
/// as 48 kHz PCM, the browser's capture rate.
pub fn caller_48k(name: &str) -> Vec<i16> {
    use callbridge::audio::resample::Resampler;
    let bytes = std::fs::read(format!("fixtures/audio/{name}")).expect("a fixture");
    let (rate, pcm) = callbridge::audio::wav::read_wav_mono_i16(&bytes).expect("a WAV fixture");
    let mut rs = Resampler::new(rate, 48_000, 160).expect("a resampler");
    let mut out = Vec::with_capacity(pcm.len() * 6);
    let mut buf = vec![0i16; rs.output_len(160)];
    for chunk in pcm.chunks_exact(160) {
        let n = rs.process(chunk, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A browser call in progress.
pub struct WebRtcPeer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    /// Behind a lock only so the peer is `Sync` (libopus's state is not).
    encoder: Mutex<Encoder>,
    packet: Vec<u8>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// `Location` of the session (`/webrtc/sessions/{key}`).
    pub session: String,
    /// Our call id (`X-Callbridge-Call-Id`).
    pub call_id: String,
    /// What the peer heard.
    pub shared: Arc<Mutex<Shared>>,
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

fn codec(mime: &str, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 48_000,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

impl WebRtcPeer {
    /// Call the server at `base` (`http://127.0.0.1:port`); `query` is the
    /// offer's query string (`number=…`), `bearer` a tenant token.
    pub async fn call(base: &str, query: &str, bearer: Option<&str>) -> Result<Self, PeerError> {
        use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_TELEPHONE_EVENT};
        let mut media = MediaEngine::default();
        media.register_codec(codec(MIME_TYPE_OPUS, 2, "minptime=10;useinbandfec=1", OPUS_PT), RtpCodecKind::Audio)?;
        media.register_codec(codec(MIME_TYPE_TELEPHONE_EVENT, 1, "0-16", DTMF_PT), RtpCodecKind::Audio)?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (gtx, mut grx) = tokio::sync::mpsc::channel(1);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler { shared: shared.clone(), gathered: gtx }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = 0x1234_5678;
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "caller".to_owned(),
            "mic".to_owned(),
            "microphone".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec(MIME_TYPE_OPUS, 2, "minptime=10;useinbandfec=1", OPUS_PT).rtp_codec,
                ..Default::default()
            }],
        )));
        pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
        let sdp = pc.local_description().await.ok_or_else(|| PeerError::Stack("no offer".into()))?.sdp;
        let http = reqwest::Client::new();
        let mut req = http
            .post(format!("{base}/webrtc/offer?{query}"))
            .header("content-type", "application/sdp")
            .body(sdp)
            .timeout(Duration::from_secs(10));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.map_err(|e| PeerError::Http(e.to_string()))?;
        let status = r.status().as_u16();
        let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (session, call_id) = (header("location"), header("x-callbridge-call-id"));
        let body = r.text().await.map_err(|e| PeerError::Http(e.to_string()))?;
        if status != 201 {
            let _ = pc.close().await;
            return Err(PeerError::Refused { status, body });
        }
        let answer = RTCSessionDescription::answer(body).map_err(|e| PeerError::Stack(e.to_string()))?;
        pc.set_remote_description(answer).await?;
        let encoder = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
        Ok(Self {
            pc,
            track,
            encoder: Mutex::new(encoder),
            packet: vec![0; 1500],
            ssrc,
            seq: 1,
            ts: 0,
            session,
            call_id,
            shared,
            http,
            base: base.to_string(),
            bearer: bearer.map(str::to_string),
        })
    }

    /// Wait (bounded) until the connection is up.
    pub async fn connected(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.shared.lock().expect("peer state").connected {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Send one 20 ms frame of 48 kHz caller audio (the caller paces).
    pub async fn send_frame(&mut self, frame: &[i16]) -> Result<(), PeerError> {
        let n = self.encoder.get_mut().expect("encoder").encode(frame, &mut self.packet)?;
        self.write(OPUS_PT, bytes::Bytes::copy_from_slice(&self.packet[..n]), self.ts).await?;
        self.ts = self.ts.wrapping_add(FRAME as u32);
        Ok(())
    }

    /// Send one pre-encoded 20 ms Opus packet (a load generator encodes its
    /// clips once).
    pub async fn send_packet(&mut self, opus: &bytes::Bytes) -> Result<(), PeerError> {
        self.write(OPUS_PT, opus.clone(), self.ts).await?;
        self.ts = self.ts.wrapping_add(FRAME as u32);
        Ok(())
    }

    /// Press a key (RFC 4733: three packets, the last with the end bit).
    pub async fn press(&mut self, event: u8) -> Result<(), PeerError> {
        let ts = self.ts;
        for (i, end) in [0u8, 0, 0x80].into_iter().enumerate() {
            let dur = ((i as u16) + 1) * 960;
            let payload = [event, end | 10, (dur >> 8) as u8, dur as u8];
            self.write(DTMF_PT, bytes::Bytes::copy_from_slice(&payload), ts).await?;
        }
        Ok(())
    }

    async fn write(&mut self, pt: u8, payload: bytes::Bytes, ts: u32) -> Result<(), PeerError> {
        let header = rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: self.seq,
            timestamp: ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(rtc::rtp::packet::Packet { header, payload }).await?;
        Ok(())
    }

    /// Agent packets heard so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.shared.lock().expect("peer state").heard.clone()
    }

    /// Agent packets heard at or after `since`: how many, how many above
    /// `loud`, and when the first and the last loud one arrived.
    pub fn loudness_since(&self, since: Instant, loud: f32) -> Loudness {
        let s = self.shared.lock().expect("peer state");
        let start = s.heard.partition_point(|h| h.at < since);
        let mut l = Loudness { packets: s.heard.len() - start, ..Loudness::default() };
        for h in &s.heard[start..] {
            if h.rms > loud {
                l.loud += 1;
                l.first_loud.get_or_insert(h.at);
                l.last_loud = Some(h.at);
            }
        }
        l
    }

    /// When the agent's voice stopped after `since`: its last loud packet
    /// before the first gap of `gap` without one (None: no loud packet).
    /// Audio after that gap is a new utterance, not the one that stopped.
    pub fn voice_stopped(&self, since: Instant, loud: f32, gap: Duration) -> Option<Instant> {
        let s = self.shared.lock().expect("peer state");
        let start = s.heard.partition_point(|h| h.at < since);
        let mut last: Option<Instant> = None;
        for h in s.heard[start..].iter().filter(|h| h.rms > loud) {
            if last.is_some_and(|l| h.at.duration_since(l) >= gap) {
                break;
            }
            last = Some(h.at);
        }
        last
    }

    /// Whether the connection failed or closed.
    pub fn ended(&self) -> bool {
        self.shared.lock().expect("peer state").ended
    }

    /// `DELETE` the session (hang up); the HTTP status.
    pub async fn hang_up(&self) -> Result<u16, PeerError> {
        let mut req = self.http.delete(format!("{}{}", self.base, self.session)).timeout(Duration::from_secs(5));
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.map_err(|e| PeerError::Http(e.to_string()))?;
        Ok(r.status().as_u16())
    }

    /// Close the peer connection (the browser tab closing).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
