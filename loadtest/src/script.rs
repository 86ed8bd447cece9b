//! One simulated caller's behaviour, sans-IO: driven by 20 ms ticks and the
//! server's messages, each with the time in ms since the call began.
//!
//! It plays Twilio's part exactly: a frame every tick (speech or µ-law silence),
//! marks echoed only when the audio queued before them would have finished
//! playing at real time, all pending marks echoed at once on `clear`. And it
//! keeps the books: end of speech → first bot sound (response latency), onset
//! of speech during bot audio → `clear` (barge-in latency), bot audio that
//! arrives later than real time within a response (underrun), bot sound that
//! starts while the caller is still inside their turn (a premature answer),
//! and `clear`s nobody asked for (the bot cut off by its own echo).
//!
//! With an echo set, it plays a caller on a speakerphone: the bot audio the
//! far end played comes back into the caller's frames, delayed and
//! attenuated.

use std::sync::Arc;

use callbridge_testkit::twilio_peer::{PlayoutModel, ServerMessage};

use crate::clip::{Clip, is_sound};
use crate::scenario::Scenario;

/// µ-law silence frame.
pub const SILENCE: [u8; 160] = [0xFF; 160];

/// `SILENCE` in base64.
pub fn silence_b64() -> &'static str {
    static S: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(SILENCE)
    });
    &S
}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct ScriptTiming {
    /// Barge-in: interrupt after the bot has played this long.
    pub barge_after_ms: f64,
    /// Hang-up scenario: hang up after the bot has played this long.
    pub hangup_after_ms: f64,
    /// Talk: speak again once the bot has been quiet this long.
    pub quiet_before_speaking_ms: f64,
    /// A turn with no reply within this long is a failure.
    pub reply_timeout_ms: f64,
    /// A barge-in with no clear within this long is a failure.
    pub clear_timeout_ms: f64,
    /// Gaps in bot audio shorter than this are underruns (longer = between responses).
    pub underrun_window_ms: f64,
    /// Speakerphone echo: the played bot audio leaks back this many dB down
    /// (None: no echo).
    pub echo_db: Option<f32>,
    /// … this long after it played.
    pub echo_delay_ms: f64,
}

impl Default for ScriptTiming {
    fn default() -> Self {
        Self {
            barge_after_ms: 1000.0,
            hangup_after_ms: 500.0,
            quiet_before_speaking_ms: 400.0,
            reply_timeout_ms: 5000.0,
            clear_timeout_ms: 2000.0,
            underrun_window_ms: 200.0,
            echo_db: None,
            echo_delay_ms: 120.0,
        }
    }
}

/// What one tick sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick<'a> {
    /// The media frame (always one: Twilio streams continuously).
    pub frame: &'a [u8; 160],
    /// The same frame in base64 when it went out as recorded (no echo mixed in).
    pub b64: Option<&'a str>,
    /// A DTMF key to send after it.
    pub dtmf: Option<char>,
    /// Mark names to echo now.
    pub marks: Vec<String>,
    /// Hang up after this tick.
    pub hangup: bool,
}

/// Measurements of one call.
#[derive(Debug, Clone, Default)]
pub struct CallBook {
    /// (ms since call start, latency ms)
    pub response_ms: Vec<(f64, f64)>,
    /// (ms since call start, latency ms)
    pub barge_in_ms: Vec<(f64, f64)>,
    /// Underrun count and total gap.
    pub underruns: u32,
    /// Total underrun gap, ms.
    pub underrun_total_ms: f64,
    /// Failures by kind.
    pub failures: Vec<&'static str>,
    /// Turns spoken.
    pub turns: u32,
    /// Bot audio frames received.
    pub bot_frames: u64,
    /// Marks echoed.
    pub marks_echoed: u64,
    /// Turns during which bot sound started before the caller's last speech frame.
    pub premature: u32,
    /// Responses to turns that end at a complete sentence (same shape as `response_ms`).
    pub complete_response_ms: Vec<(f64, f64)>,
    /// `clear`s while the caller was not talking over the bot (false barge-ins).
    pub false_clears: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Speaking { clip: usize, pos: usize, barge: bool },
    Listening { since: f64 },
    Done,
}

/// One caller.
pub struct Script {
    scenario: Scenario,
    clips: Arc<Vec<Clip>>,
    timing: ScriptTiming,
    next_clip: usize,
    phase: Phase,
    playout: PlayoutModel,
    /// When the current stretch of bot audio began (None when quiet).
    bot_since: Option<f64>,
    last_bot_audio: Option<f64>,
    heard_any_bot: bool,
    awaiting_reply: Option<f64>,
    barge_onset: Option<f64>,
    cleared_at: Option<f64>,
    ticks: u64,
    /// The current turn already had a premature answer.
    premature_now: bool,
    /// The turn awaiting a reply ends at a complete sentence.
    awaiting_complete: bool,
    /// Speakerphone: bot audio not yet played, what played (newest last), and
    /// this tick's frame with the echo mixed in.
    far: std::collections::VecDeque<i16>,
    played: std::collections::VecDeque<i16>,
    mixed: [u8; 160],
    /// Results.
    pub book: CallBook,
}

impl Script {
    /// A caller following `scenario`, starting with clip `first_clip`.
    pub fn new(scenario: Scenario, clips: Arc<Vec<Clip>>, first_clip: usize, timing: ScriptTiming) -> Self {
        Self {
            scenario,
            next_clip: first_clip % clips.len().max(1),
            clips,
            timing,
            phase: Phase::Listening { since: 0.0 },
            playout: PlayoutModel::default(),
            bot_since: None,
            last_bot_audio: None,
            heard_any_bot: false,
            awaiting_reply: None,
            barge_onset: None,
            cleared_at: None,
            ticks: 0,
            premature_now: false,
            awaiting_complete: false,
            far: std::collections::VecDeque::new(),
            played: std::collections::VecDeque::new(),
            mixed: SILENCE,
            book: CallBook::default(),
        }
    }

    fn bot_playing(&self, now: f64) -> bool {
        self.playout.playing(now)
    }

    fn start_speaking(&mut self, barge: bool) {
        let clip = self.next_clip;
        self.next_clip = (self.next_clip + 1) % self.clips.len();
        self.phase = Phase::Speaking { clip, pos: 0, barge };
        self.premature_now = false;
        self.book.turns += 1;
    }

    /// The 20 ms timer fired at `now` ms.
    pub fn on_tick(&mut self, now: f64) -> Tick<'_> {
        self.ticks += 1;
        if !self.bot_playing(now) {
            self.bot_since = None;
        }
        // Timeouts.
        if self.awaiting_reply.is_some_and(|t| now - t > self.timing.reply_timeout_ms) {
            self.awaiting_reply = None;
            self.book.failures.push("no_reply");
        }
        if self.barge_onset.is_some_and(|t| now - t > self.timing.clear_timeout_ms) {
            self.barge_onset = None;
            self.book.failures.push("no_clear");
        }
        // Decide what to do in this 20 ms.
        if let Phase::Listening { since } = self.phase {
            let bot_for = self.bot_since.map_or(0.0, |s| now - s);
            let quiet_for = self
                .last_bot_audio
                .map_or(now - since, |t| if self.bot_playing(now) { 0.0 } else { now - t.max(since) });
            match self.scenario {
                Scenario::Talk => {
                    let waited = self.awaiting_reply.is_none();
                    let quiet = !self.bot_playing(now) && quiet_for >= self.timing.quiet_before_speaking_ms;
                    let nothing_yet = !self.heard_any_bot && now - since >= 1000.0;
                    if waited && (quiet || nothing_yet) {
                        self.start_speaking(false);
                    }
                }
                Scenario::BargeIn => {
                    let interrupt = self.bot_playing(now) && bot_for >= self.timing.barge_after_ms;
                    let quiet = self.awaiting_reply.is_none()
                        && !self.bot_playing(now)
                        && quiet_for >= self.timing.quiet_before_speaking_ms.max(1000.0);
                    if interrupt {
                        self.start_speaking(true);
                    } else if quiet {
                        self.start_speaking(false);
                    }
                }
                Scenario::HangupMidReply => {
                    // Hang up during the answer to our own turn (not during the greeting).
                    let answering = self.book.turns > 0 && self.book.response_ms.len() as u32 >= self.book.turns;
                    if answering && self.bot_playing(now) && bot_for >= self.timing.hangup_after_ms {
                        self.phase = Phase::Done;
                    } else if !self.bot_playing(now) && self.awaiting_reply.is_none() && quiet_for >= 1000.0 {
                        self.start_speaking(false);
                    }
                }
                Scenario::Short => {
                    let quiet = !self.bot_playing(now) && quiet_for >= self.timing.quiet_before_speaking_ms;
                    if self.book.turns == 0 {
                        if quiet || (!self.heard_any_bot && now - since >= 1000.0) {
                            self.start_speaking(false);
                        }
                    } else if self.awaiting_reply.is_none() && quiet {
                        // Answered and heard in full (or given up on: counted as no_reply).
                        self.phase = Phase::Done;
                    }
                }
                Scenario::Silence | Scenario::Dtmf => {}
            }
        }
        let marks = self.playout.due_marks(now);
        self.book.marks_echoed += marks.len() as u64;
        let dtmf = (self.scenario == Scenario::Dtmf && self.ticks.is_multiple_of(100))
            .then(|| char::from(b'0' + (self.ticks / 100 % 10) as u8));
        match self.phase {
            Phase::Speaking { clip, pos, barge } => {
                let c = &self.clips[clip];
                if pos == c.speech_start && barge && self.bot_playing(now) {
                    self.barge_onset = Some(now);
                }
                if pos == c.speech_end {
                    // The caller's last speech frame goes out now: a reply is due.
                    self.awaiting_reply = Some(now);
                    self.awaiting_complete = c.complete;
                }
                self.phase = if pos + 1 >= c.frames.len() {
                    Phase::Listening { since: now }
                } else {
                    Phase::Speaking { clip, pos: pos + 1, barge }
                };
                if self.timing.echo_db.is_none() {
                    let c = &self.clips[clip];
                    return Tick { frame: &c.frames[pos], b64: Some(&c.b64[pos]), dtmf, marks, hangup: false };
                }
                let frame = self.clips[clip].frames[pos];
                Tick { frame: self.with_echo(&frame), b64: None, dtmf, marks, hangup: false }
            }
            Phase::Listening { .. } if self.timing.echo_db.is_none() => {
                Tick { frame: &SILENCE, b64: Some(silence_b64()), dtmf, marks, hangup: false }
            }
            Phase::Listening { .. } => Tick { frame: self.with_echo(&SILENCE), b64: None, dtmf, marks, hangup: false },
            Phase::Done => Tick { frame: &SILENCE, b64: Some(silence_b64()), dtmf: None, marks, hangup: true },
        }
    }

    /// The far end plays 20 ms of bot audio; the caller's frame goes out with
    /// its echo when the script has one.
    fn with_echo(&mut self, frame: &[u8; 160]) -> &[u8; 160] {
        self.mixed = *frame;
        let Some(db) = self.timing.echo_db else { return &self.mixed };
        for _ in 0..160 {
            let s = self.far.pop_front().unwrap_or(0);
            self.played.push_back(s);
        }
        let delay = (self.timing.echo_delay_ms * 8.0) as usize;
        while self.played.len() > delay + 160 {
            self.played.pop_front();
        }
        if self.played.len() < delay + 160 {
            return &self.mixed;
        }
        let g = 10f32.powf(db / 20.0);
        let mut pcm = [0i16; 160];
        callbridge::audio::g711::ulaw_decode(frame, &mut pcm);
        for (i, p) in pcm.iter_mut().enumerate() {
            *p = (*p as f32 + g * self.played[i] as f32).clamp(-32768.0, 32767.0) as i16;
        }
        callbridge::audio::g711::ulaw_encode(&pcm, &mut self.mixed);
        &self.mixed
    }

    /// A message from the server arrived at `now` ms; returns marks to echo now.
    pub fn on_server(&mut self, now: f64, msg: ServerMessage) -> Vec<String> {
        match msg {
            ServerMessage::Media(payload) => {
                self.book.bot_frames += 1;
                let was_playing = self.bot_playing(now);
                let gap = self.playout.audio(now, payload.len());
                let recently_cleared = self.cleared_at.is_some_and(|c| now - c < self.timing.underrun_window_ms);
                if gap > 0.0 && gap < self.timing.underrun_window_ms && self.heard_any_bot && !recently_cleared {
                    self.book.underruns += 1;
                    self.book.underrun_total_ms += gap;
                }
                if !was_playing {
                    self.bot_since = Some(now);
                }
                self.heard_any_bot = true;
                self.last_bot_audio = Some(now);
                let sound = is_sound(&payload);
                if let Some(t) = self.awaiting_reply
                    && sound
                {
                    self.book.response_ms.push((now, now - t));
                    if self.awaiting_complete {
                        self.book.complete_response_ms.push((now, now - t));
                    }
                    self.awaiting_reply = None;
                }
                if sound
                    && !self.premature_now
                    && let Phase::Speaking { clip, pos, barge: false } = self.phase
                    && pos <= self.clips[clip].speech_end
                {
                    // The bot answered while the caller is still in their turn.
                    self.premature_now = true;
                    self.book.premature += 1;
                }
                if self.timing.echo_db.is_some() {
                    let mut pcm = vec![0i16; payload.len()];
                    callbridge::audio::g711::ulaw_decode(&payload, &mut pcm);
                    self.far.extend(pcm);
                }
                Vec::new()
            }
            ServerMessage::Mark(name) => {
                self.playout.mark(now, name);
                let due = self.playout.due_marks(now);
                self.book.marks_echoed += due.len() as u64;
                due
            }
            ServerMessage::Clear => {
                self.cleared_at = Some(now);
                self.bot_since = None;
                self.far.clear();
                let talking = matches!(self.phase, Phase::Speaking { .. });
                if let Some(onset) = self.barge_onset.take() {
                    self.book.barge_in_ms.push((now, now - onset));
                } else if !talking {
                    // Nobody talked over the bot: it cut itself off.
                    self.book.false_clears += 1;
                }
                let all = self.playout.clear(now);
                self.book.marks_echoed += all.len() as u64;
                all
            }
        }
    }

    /// The scenario asked to hang up.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clips() -> Arc<Vec<Clip>> {
        // 5 frames silence, 10 frames speech, 30 frames silence.
        let mut pcm = vec![0i16; 160 * 45];
        for s in &mut pcm[160 * 5..160 * 15] {
            *s = 8000;
        }
        Arc::new(vec![Clip::from_pcm("t", &pcm).unwrap()])
    }

    fn loud() -> Vec<u8> {
        vec![0x80; 160]
    }

    #[test]
    fn talk_measures_end_of_speech_to_first_bot_sound() {
        let mut s = Script::new(Scenario::Talk, clips(), 0, ScriptTiming::default());
        let mut t = 0.0;
        // Nothing heard for a second: the caller starts talking.
        while s.book.turns == 0 {
            t += 20.0;
            s.on_tick(t);
        }
        let speech_start = t;
        for _ in 0..14 {
            t += 20.0;
            s.on_tick(t);
        }
        // frame index 14 (last speech frame) went out 14 ticks after frame 0.
        let speech_end = speech_start + 14.0 * 20.0;
        assert_eq!(s.awaiting_reply, Some(speech_end));
        // Silent bot audio does not count; the first sound does.
        s.on_server(speech_end + 500.0, ServerMessage::Media(vec![0xFF; 160]));
        s.on_server(speech_end + 520.0, ServerMessage::Media(loud()));
        assert_eq!(s.book.response_ms, vec![(speech_end + 520.0, 520.0)]);
    }

    #[test]
    fn marks_are_echoed_when_their_audio_has_played_and_all_at_once_on_clear() {
        let mut s = Script::new(Scenario::Silence, clips(), 0, ScriptTiming::default());
        s.on_server(0.0, ServerMessage::Media(loud()));
        s.on_server(0.0, ServerMessage::Media(loud()));
        assert_eq!(s.on_server(0.0, ServerMessage::Mark("a".into())), Vec::<String>::new());
        s.on_server(0.0, ServerMessage::Media(loud()));
        s.on_server(0.0, ServerMessage::Mark("b".into()));
        assert!(s.on_tick(20.0).marks.is_empty());
        assert_eq!(s.on_tick(40.0).marks, vec!["a".to_string()]);
        assert_eq!(s.on_server(45.0, ServerMessage::Clear), vec!["b".to_string()]);
        assert!(s.on_tick(100.0).marks.is_empty());
        // A mark after an empty queue is due at once.
        assert_eq!(s.on_server(200.0, ServerMessage::Mark("c".into())), vec!["c".to_string()]);
    }

    #[test]
    fn barge_in_latency_runs_from_onset_during_bot_audio_to_clear() {
        let timing = ScriptTiming { barge_after_ms: 100.0, ..ScriptTiming::default() };
        let mut s = Script::new(Scenario::BargeIn, clips(), 0, timing);
        // The bot talks (a long burst of audio at t=0).
        for _ in 0..100 {
            s.on_server(0.0, ServerMessage::Media(loud()));
        }
        let mut t = 0.0;
        let mut onset = None;
        while onset.is_none() && t < 2000.0 {
            t += 20.0;
            s.on_tick(t);
            onset = s.barge_onset;
        }
        let onset = onset.expect("the caller barged in");
        // speech starts 5 frames into the clip, which began after ≥100 ms of bot audio
        assert!(onset >= 100.0 + 5.0 * 20.0, "{onset}");
        s.on_server(onset + 70.0, ServerMessage::Clear);
        assert_eq!(s.book.barge_in_ms, vec![(onset + 70.0, 70.0)]);
    }

    #[test]
    fn underruns_are_short_gaps_inside_bot_audio() {
        let mut s = Script::new(Scenario::Silence, clips(), 0, ScriptTiming::default());
        s.on_server(0.0, ServerMessage::Media(loud())); // plays until 20
        s.on_server(20.0, ServerMessage::Media(loud())); // on time
        s.on_server(70.0, ServerMessage::Media(loud())); // 30 ms late: underrun
        assert_eq!(s.book.underruns, 1);
        assert_eq!(s.book.underrun_total_ms, 30.0);
        s.on_server(2000.0, ServerMessage::Media(loud())); // a new response, not an underrun
        assert_eq!(s.book.underruns, 1);
    }

    #[test]
    fn hangup_waits_for_the_answer_to_our_turn_not_the_greeting() {
        let mut s = Script::new(Scenario::HangupMidReply, clips(), 0, ScriptTiming::default());
        // A greeting plays for 2 s: no hang-up during it.
        for _ in 0..100 {
            s.on_server(0.0, ServerMessage::Media(loud()));
        }
        let mut t = 0.0;
        while t < 2000.0 {
            t += 20.0;
            assert!(!s.on_tick(t).hangup, "hung up during the greeting at {t}");
        }
        // After the greeting the caller speaks, is answered, and hangs up 500 ms in.
        while s.awaiting_reply.is_none() {
            t += 20.0;
            s.on_tick(t);
        }
        let answer = t + 500.0;
        for _ in 0..100 {
            s.on_server(answer, ServerMessage::Media(loud()));
        }
        let mut hung = None;
        while t < answer + 2000.0 && hung.is_none() {
            t += 20.0;
            if s.on_tick(t).hangup {
                hung = Some(t);
            }
        }
        let hung = hung.expect("hung up mid-reply");
        assert!(hung >= answer + 500.0 && hung < answer + 560.0, "{hung} vs answer at {answer}");
    }

    #[test]
    fn missing_reply_and_missing_clear_are_failures() {
        let mut s = Script::new(Scenario::Talk, clips(), 0, ScriptTiming::default());
        let mut t = 0.0;
        while t < 8000.0 {
            t += 20.0;
            s.on_tick(t);
        }
        assert!(s.book.failures.contains(&"no_reply"));
    }
}
