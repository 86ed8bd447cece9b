//! Where each side's audio lands in the call's recording.
//!
//! Positions are samples on the caller's timeline (the carrier's clock): caller
//! audio is placed sequentially as it arrives. Bot audio is placed where the
//! carrier will *play* it: audio released while the carrier still holds some
//! plays right after it, so it follows the previous bot audio exactly;
//! otherwise it starts where the caller's audio is now. A clear cuts the bot
//! channel at the caller's current position, so a barge-in shows as the bot
//! stopping where the caller heard it stop. The recorder only writes what it
//! is told, where it is told.

/// Audio for the recording, with its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOp<'a> {
    /// Caller audio, following the previous caller audio.
    Caller {
        /// samples at the stream's rate
        pcm: &'a [i16],
    },
    /// Bot audio played from `pos` on.
    Bot {
        /// samples at the stream's rate
        pcm: &'a [i16],
        /// caller-timeline position of its first sample
        pos: u64,
    },
    /// The carrier dropped the bot audio scheduled from `pos` on.
    Clear {
        /// caller-timeline position
        pos: u64,
    },
}

/// The recording's placement state for one call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordClock {
    caller_pos: u64,
    bot_end: Option<u64>,
}

impl RecordClock {
    /// `n` caller samples arrived; returns where they start.
    pub fn caller(&mut self, n: u64) -> u64 {
        let p = self.caller_pos;
        self.caller_pos += n;
        p
    }

    /// `n` bot samples were released; `queued` if the carrier still holds
    /// earlier bot audio (so these play right after it). Returns where they start.
    pub fn bot(&mut self, n: u64, queued: bool) -> u64 {
        let pos = match self.bot_end {
            Some(end) if queued => end,
            _ => self.caller_pos,
        };
        self.bot_end = Some(pos + n);
        pos
    }

    /// The carrier dropped what it held, now; returns the cut position.
    pub fn clear(&mut self) -> u64 {
        self.bot_end = None;
        self.caller_pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_audio_follows_queued_audio_or_starts_at_the_caller_position() {
        let mut c = RecordClock::default();
        assert_eq!(c.caller(160), 0);
        // First bot frame: nothing queued at the carrier → now (160).
        assert_eq!(c.bot(320, false), 160);
        // Released while the carrier still plays the first: right after it.
        assert_eq!(c.bot(320, true), 480);
        c.caller(160);
        c.caller(160);
        // The carrier ran dry: a new frame starts at the caller's position.
        assert_eq!(c.bot(320, false), 480);
        assert_eq!(c.clear(), 480);
        assert_eq!(c.bot(320, true), 480, "after a clear nothing is queued before it");
    }
}
