//! Scenarios and weighted mixes.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What a simulated caller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Speak, wait for the whole answer, repeat.
    Talk,
    /// Speak again while the bot is still talking.
    BargeIn,
    /// Say nothing (idle line noise cost).
    Silence,
    /// Press keys now and then, otherwise silent.
    Dtmf,
    /// Hang up while the bot is answering, then call again.
    HangupMidReply,
    /// One turn, the whole answer heard, hang up, then call again (churn:
    /// thousands of short calls in sequence, for leaks).
    Short,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 6] = [
        Scenario::Talk,
        Scenario::BargeIn,
        Scenario::Silence,
        Scenario::Dtmf,
        Scenario::HangupMidReply,
        Scenario::Short,
    ];

    /// CLI name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Talk => "talk",
            Scenario::BargeIn => "barge-in",
            Scenario::Silence => "silence",
            Scenario::Dtmf => "dtmf",
            Scenario::HangupMidReply => "hangup-mid-reply",
            Scenario::Short => "short",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?} (talk, barge-in, silence, dtmf, hangup-mid-reply, short)"))
    }
}

/// A weighted mix, e.g. `talk=3,barge-in=1` or a single scenario name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix(pub Vec<(Scenario, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = match part.split_once('=') {
                Some((n, w)) => (n, w.parse::<u32>().map_err(|_| format!("bad weight in {part:?}"))?),
                None => (part, 1),
            };
            if w > 0 {
                out.push((name.parse()?, w));
            }
        }
        if out.is_empty() {
            return Err("empty scenario mix".into());
        }
        Ok(Mix(out))
    }
}

impl Mix {
    /// Scenario of call number `i`: deterministic, spread by weight.
    pub fn pick(&self, i: u64) -> Scenario {
        let total: u64 = self.0.iter().map(|(_, w)| *w as u64).sum();
        let mut k = i % total;
        for (s, w) in &self.0 {
            if k < *w as u64 {
                return *s;
            }
            k -= *w as u64;
        }
        self.0[0].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m: Mix = "talk=3,barge-in=1".parse().unwrap();
        let picks: Vec<_> = (0..8).map(|i| m.pick(i)).collect();
        assert_eq!(picks.iter().filter(|s| **s == Scenario::Talk).count(), 6);
        assert_eq!(picks.iter().filter(|s| **s == Scenario::BargeIn).count(), 2);
        assert_eq!("silence".parse::<Mix>().unwrap(), Mix(vec![(Scenario::Silence, 1)]));
        assert!("talk=x".parse::<Mix>().is_err());
        assert!("nope".parse::<Mix>().is_err());
    }
}
