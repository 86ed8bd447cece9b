//! A process's CPU and RSS from /proc (Linux), sampled once a second: the
//! loadtest samples the server with it, the dashboard samples itself.

use serde::Serialize;

/// One sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// Seconds since the test began.
    pub t: f64,
    /// CPU used since the previous sample, % of one core.
    pub cpu_percent: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// Reads a process's CPU ticks and RSS.
#[derive(Debug)]
pub struct ProcReader {
    pid: u32,
    ticks_per_sec: f64,
    last: Option<(f64, u64)>,
}

impl ProcReader {
    /// A reader for `pid`.
    pub fn new(pid: u32) -> Self {
        // CLK_TCK is 100 on every Linux this runs on (x86-64, aarch64).
        Self { pid, ticks_per_sec: 100.0, last: None }
    }

    /// (utime + stime ticks, rss KiB), or None if the process is gone.
    pub fn read(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = parse_stat_ticks(&stat)?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some((ticks, rss))
    }

    /// Take a sample at `t` seconds.
    pub fn sample(&mut self, t: f64) -> Option<ProcSample> {
        let (ticks, rss) = self.read()?;
        let cpu = match self.last {
            Some((t0, k0)) if t > t0 => (ticks - k0) as f64 / self.ticks_per_sec / (t - t0) * 100.0,
            _ => 0.0,
        };
        let first = self.last.is_none();
        self.last = Some((t, ticks));
        if first { None } else { Some(ProcSample { t, cpu_percent: cpu, rss_kib: rss }) }
    }
}

/// utime + stime from a /proc/<pid>/stat line (fields 14 and 15; the command
/// name in parentheses may contain spaces).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14 → index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ticks_even_with_spaces_in_the_name() {
        let line = "1234 (call bridge) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_stat_ticks(line), Some(300));
        let me = ProcReader::new(std::process::id());
        assert!(me.read().is_some());
    }
}
