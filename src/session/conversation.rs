//! The conversation as the backend sees it: turns numbered in order, times in
//! ms since the call started, what the bot said and what the caller heard of
//! it, and the per-exchange latencies that go into `call.ended`.
//!
//! Sans-IO: fed the session's [`Telemetry`] (and text when an engine gives
//! text), it returns the callback [`Event`]s to send. The same record is what a
//! transcript store keeps.

use std::collections::HashMap;
use std::time::Instant;

use super::Telemetry;
use crate::contract::{AgentTurn, CallSummary, Event, TurnLatency, UserTurn};
use crate::ids::ResponseId;

/// One call's conversation so far.
#[derive(Debug)]
pub struct Conversation {
    origin: Instant,
    turn: u32,
    user_turns: u32,
    agent_turns: u32,
    barge_ins: u32,
    latencies: Vec<TurnLatency>,
    /// Text of responses (engines that give text), by response.
    texts: HashMap<ResponseId, String>,
    /// Last user transcript not yet attached to a turn.
    pending_transcript: Option<String>,
    /// Hold each user turn until its transcript arrives (engines that transcribe).
    hold_user: bool,
    /// Only the transcript (or a newer turn) releases a held user turn: its
    /// text is what the backend answers (the brain).
    hold_firmly: bool,
    held: Option<UserTurn>,
    /// When each character of a response is spoken (engines that say), by response.
    alignments: HashMap<ResponseId, Vec<(u32, char)>>,
}

fn ms(origin: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(origin).as_millis() as u64
}

/// The words of an aligned response whose every character began before
/// `heard_ms` (a word cut off mid-way was not heard).
pub fn heard_aligned(chars: &[(u32, char)], heard_ms: u32) -> String {
    let n = chars.iter().take_while(|(t, _)| *t < heard_ms).count();
    let complete = n == chars.len() || chars[n].1.is_whitespace();
    let mut cut = n;
    if !complete {
        while cut > 0 && !chars[cut - 1].1.is_whitespace() {
            cut -= 1;
        }
    }
    chars[..cut].iter().map(|(_, c)| *c).collect::<String>().trim().to_string()
}

/// The prefix of `text` proportional to `heard` of `sent`, cut at a word boundary.
pub fn heard_prefix(text: &str, heard_ms: u32, sent_ms: u32) -> String {
    if sent_ms == 0 || heard_ms >= sent_ms {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let n = (chars.len() as u64 * heard_ms as u64 / sent_ms as u64) as usize;
    let mut cut = n.min(chars.len());
    while cut > 0 && cut < chars.len() && !chars[cut].is_whitespace() {
        cut -= 1;
    }
    chars[..cut].iter().collect::<String>().trim_end().to_string()
}

impl Conversation {
    /// ms since the call started, at `t`.
    pub fn at_ms(&self, t: Instant) -> u64 {
        ms(self.origin, t)
    }

    /// A conversation whose clock starts at `origin` (the stream's start).
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            turn: 0,
            user_turns: 0,
            agent_turns: 0,
            barge_ins: 0,
            latencies: Vec::new(),
            texts: HashMap::new(),
            pending_transcript: None,
            hold_user: false,
            hold_firmly: false,
            held: None,
            alignments: HashMap::new(),
        }
    }

    /// Expect transcripts: a `turn.user` waits for its transcript (or for the
    /// next event, whichever comes first) so it is sent with the text.
    /// With `firmly`, other events do not release it (the brain answers the text).
    pub fn expect_transcripts(&mut self, yes: bool, firmly: bool) {
        self.hold_user = yes;
        self.hold_firmly = yes && firmly;
    }

    /// When characters of `response` are spoken (appended in order).
    pub fn alignment(&mut self, response: ResponseId, chars: &str, starts_ms: &[u32]) {
        let a = self.alignments.entry(response).or_default();
        a.extend(starts_ms.iter().copied().zip(chars.chars()));
    }

    /// The held user turn, if any (before `call.ended`).
    pub fn flush(&mut self) -> Option<Event> {
        self.held.take().map(Event::TurnUser)
    }

    /// The engine's text for `response` (accumulated across deltas).
    pub fn response_text(&mut self, response: ResponseId, delta: &str) {
        self.texts.entry(response).or_default().push_str(delta);
    }

    /// The engine's transcript of the caller's last turn (may arrive after the
    /// turn ended): completes the held turn, or waits for the next one.
    pub fn user_transcript(&mut self, text: String) -> Option<Event> {
        match self.held.take() {
            Some(mut u) => {
                u.transcript = Some(text);
                Some(Event::TurnUser(u))
            }
            None => {
                self.pending_transcript = Some(text);
                None
            }
        }
    }

    /// Account for one telemetry item; returns the events to send, in order.
    pub fn on_telemetry(&mut self, t: &Telemetry, now: Instant) -> Vec<Event> {
        let Some(ev) = self.event_for(t, now) else { return Vec::new() };
        match ev {
            Event::TurnUser(u) if self.hold_user => self.held.replace(u).map(Event::TurnUser).into_iter().collect(),
            ev if self.hold_firmly => vec![ev],
            ev => self.flush().into_iter().chain(std::iter::once(ev)).collect(),
        }
    }

    fn event_for(&mut self, t: &Telemetry, now: Instant) -> Option<Event> {
        match *t {
            Telemetry::TurnEnded { start, end, .. } => {
                self.turn += 1;
                self.user_turns += 1;
                self.latencies.push(TurnLatency { turn: self.turn, ..Default::default() });
                Some(Event::TurnUser(UserTurn {
                    turn: self.turn,
                    start_ms: ms(self.origin, start),
                    end_ms: ms(self.origin, end),
                    transcript: self.pending_transcript.take(),
                }))
            }
            Telemetry::EngineFirstAudio(d) => {
                if let Some(l) = self.latencies.last_mut().filter(|l| l.engine_first_audio_ms.is_none()) {
                    l.engine_first_audio_ms = Some(d.as_millis() as u32);
                }
                None
            }
            Telemetry::ResponseLatency(d) => {
                if let Some(l) = self.latencies.last_mut().filter(|l| l.response_latency_ms.is_none()) {
                    l.response_latency_ms = Some(d.as_millis() as u32);
                }
                None
            }
            Telemetry::BargeIn { latency, heard_ms, response, onset } => {
                self.barge_ins += 1;
                if let Some(l) = self.latencies.last_mut().filter(|l| l.barge_in_latency_ms.is_none()) {
                    l.barge_in_latency_ms = Some(latency.as_millis() as u32);
                }
                Some(Event::BargeIn {
                    at_ms: ms(self.origin, onset),
                    response_id: response.0,
                    heard_ms,
                    latency_ms: latency.as_millis() as u32,
                })
            }
            Telemetry::ResponseFinished { response, started, sent_ms, heard_ms, interrupted } => {
                self.turn += 1;
                self.agent_turns += 1;
                let text = self.texts.remove(&response);
                let aligned = self.alignments.remove(&response);
                let start_ms = ms(self.origin, started);
                let heard_text = match (&aligned, &text) {
                    (Some(a), _) if interrupted => Some(heard_aligned(a, heard_ms)),
                    (_, Some(t)) => Some(heard_prefix(t, heard_ms, sent_ms)),
                    (Some(a), None) => Some(heard_aligned(a, u32::MAX)),
                    (None, None) => None,
                };
                Some(Event::TurnAgent(AgentTurn {
                    turn: self.turn,
                    response_id: response.0,
                    start_ms,
                    end_ms: start_ms + heard_ms.max(if interrupted { 0 } else { sent_ms }) as u64,
                    heard_text,
                    text,
                    sent_ms,
                    heard_ms,
                    interrupted,
                }))
            }
            Telemetry::Dtmf(d) => Some(Event::Dtmf { digit: d.to_string(), at_ms: ms(self.origin, now) }),
            Telemetry::TurnStarted
            | Telemetry::Stage { .. }
            | Telemetry::Underrun
            | Telemetry::TurnResumed { .. }
            | Telemetry::EchoIgnored
            | Telemetry::StaleAudioDropped(_)
            | Telemetry::QueueOverflow(_) => None,
        }
    }

    /// The `call.ended` summary.
    pub fn summary(&self, reason: &str, now: Instant, events_dropped: u64) -> CallSummary {
        CallSummary {
            reason: reason.to_string(),
            carrier: String::new(),
            carrier_call_id: String::new(),
            from: String::new(),
            to: String::new(),
            direction: String::new(),
            answered_by: String::new(),
            started_at: String::new(),
            answered_at: String::new(),
            ended_at: String::new(),
            engine: String::new(),
            transcript: String::new(),
            duration_ms: ms(self.origin, now),
            user_turns: self.user_turns,
            agent_turns: self.agent_turns,
            barge_ins: self.barge_ins,
            latencies: self.latencies.clone(),
            events_dropped,
            model: String::new(),
            voice: String::new(),
            usage: None,
            recording_duration_ms: None,
            recording_url: None,
            recording_loss: None,
            conversation: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn turns_are_numbered_and_timed_and_heard_text_is_cut() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = Conversation::new(t0);
        assert!(c.user_transcript("my sink leaks".into()).is_none());
        let Some(Event::TurnUser(u)) = c
            .on_telemetry(
                &Telemetry::TurnEnded { start: at(300), end: at(1800), by: crate::session::turn::EndedBy::Silence },
                at(1800),
            )
            .pop()
        else {
            panic!()
        };
        assert_eq!((u.turn, u.start_ms, u.end_ms, u.transcript.as_deref()), (1, 300, 1800, Some("my sink leaks")));
        assert!(c.on_telemetry(&Telemetry::ResponseLatency(Duration::from_millis(512)), at(2300)).is_empty());
        c.response_text(ResponseId(1), "I can book a plumber ");
        c.response_text(ResponseId(1), "for tomorrow morning.");
        let ev = c.on_telemetry(
            &Telemetry::BargeIn {
                latency: Duration::from_millis(70),
                heard_ms: 1000,
                response: ResponseId(1),
                onset: at(3000),
            },
            at(3070),
        );
        assert!(matches!(
            ev.as_slice(),
            [Event::BargeIn { at_ms: 3000, heard_ms: 1000, latency_ms: 70, response_id: 1 }]
        ));
        let Some(Event::TurnAgent(a)) = c
            .on_telemetry(
                &Telemetry::ResponseFinished {
                    response: ResponseId(1),
                    started: at(2300),
                    sent_ms: 2000,
                    heard_ms: 1000,
                    interrupted: true,
                },
                at(3070),
            )
            .pop()
        else {
            panic!()
        };
        assert_eq!((a.turn, a.start_ms, a.end_ms, a.interrupted), (2, 2300, 3300, true));
        assert_eq!(a.text.as_deref(), Some("I can book a plumber for tomorrow morning."));
        assert_eq!(a.heard_text.as_deref(), Some("I can book a plumber"));
        let s = c.summary("caller_hangup", at(5000), 0);
        assert_eq!((s.user_turns, s.agent_turns, s.barge_ins, s.duration_ms), (1, 1, 1, 5000));
        assert_eq!(
            s.latencies,
            vec![TurnLatency {
                turn: 1,
                response_latency_ms: Some(512),
                engine_first_audio_ms: None,
                barge_in_latency_ms: Some(70)
            }]
        );
    }

    #[test]
    fn held_user_turns_wait_for_their_transcript_or_the_next_event() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = Conversation::new(t0);
        c.expect_transcripts(true, false);
        assert!(
            c.on_telemetry(
                &Telemetry::TurnEnded { start: at(0), end: at(900), by: crate::session::turn::EndedBy::Silence },
                at(900)
            )
            .is_empty()
        );
        let Some(Event::TurnUser(u)) = c.user_transcript("hello".into()) else { panic!() };
        assert_eq!(u.transcript.as_deref(), Some("hello"));
        // No transcript this time: the turn goes out (untranscribed) before the agent turn.
        assert!(
            c.on_telemetry(
                &Telemetry::TurnEnded { start: at(2000), end: at(2500), by: crate::session::turn::EndedBy::Silence },
                at(2500)
            )
            .is_empty()
        );
        let evs = c.on_telemetry(
            &Telemetry::ResponseFinished {
                response: ResponseId(1),
                started: at(2600),
                sent_ms: 100,
                heard_ms: 100,
                interrupted: false,
            },
            at(2700),
        );
        assert!(matches!(evs.as_slice(), [Event::TurnUser(UserTurn { transcript: None, .. }), Event::TurnAgent(_)]));
        assert!(
            c.on_telemetry(
                &Telemetry::TurnEnded { start: at(3000), end: at(3500), by: crate::session::turn::EndedBy::Silence },
                at(3500)
            )
            .is_empty()
        );
        assert!(matches!(c.flush(), Some(Event::TurnUser(UserTurn { turn: 4, .. }))));
    }

    #[test]
    fn heard_prefix_edges() {
        assert_eq!(heard_prefix("hello world", 0, 1000), "");
        assert_eq!(heard_prefix("hello world", 1000, 1000), "hello world");
        assert_eq!(heard_prefix("hello world", 600, 1000), "hello");
        assert_eq!(heard_prefix("hello", 500, 0), "hello");
    }
}
