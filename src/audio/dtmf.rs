//! DTMF (ITU-T Q.23) tones as PCM, for the `send_dtmf` tool: an engine
//! navigating a phone menu presses keys by playing their dual tones into the
//! call. Also a Goertzel detector, which is how the far end (and our tests)
//! hear them.
//!
//! Invariants: each digit is [`TONE_MS`] of its two sines at −8 dBFS each,
//! followed by [`GAP_MS`] of silence (Q.24 asks ≥ 40 ms of each); unknown
//! characters are refused, never skipped.

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];

/// Tone length per digit.
pub const TONE_MS: u32 = 100;
/// Silence after each digit.
pub const GAP_MS: u32 = 70;
/// Most digits one request may send.
pub const MAX_DIGITS: usize = 32;

/// Why digits cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A character that is no key.
    #[error("{0:?} is not a DTMF key (0-9, *, #, A-D)")]
    NotAKey(char),
    /// Nothing, or too much.
    #[error("send 1 to {MAX_DIGITS} digits")]
    Length,
}

fn freqs(key: char) -> Option<(f32, f32)> {
    let key = key.to_ascii_uppercase();
    KEYS.iter().enumerate().find_map(|(r, row)| row.iter().position(|&k| k == key).map(|c| (ROWS[r], COLS[c])))
}

/// The tones of `digits` at `rate` Hz.
pub fn tones(digits: &str, rate: u32) -> Result<Vec<i16>, DtmfError> {
    let keys: Vec<(f32, f32)> =
        digits.chars().map(|d| freqs(d).ok_or(DtmfError::NotAKey(d))).collect::<Result<_, _>>()?;
    if keys.is_empty() || keys.len() > MAX_DIGITS {
        return Err(DtmfError::Length);
    }
    let (tone, gap) = ((rate * TONE_MS / 1000) as usize, (rate * GAP_MS / 1000) as usize);
    let amp = 32767.0 * 10f32.powf(-8.0 / 20.0);
    let mut out = Vec::with_capacity(keys.len() * (tone + gap));
    for (lo, hi) in keys {
        let w = |f: f32, i: usize| (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin();
        out.extend((0..tone).map(|i| (amp * (w(lo, i) + w(hi, i)) / 2.0) as i16));
        out.extend(std::iter::repeat_n(0, gap));
    }
    Ok(out)
}

/// Power of `f` in `block` (Goertzel).
fn goertzel(block: &[i16], f: f32, rate: u32) -> f32 {
    let k = 2.0 * (2.0 * std::f32::consts::PI * f / rate as f32).cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in block {
        let s = x as f32 + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// The key sounding in `block` (≥ 20 ms of audio), if one clearly is.
pub fn detect(block: &[i16], rate: u32) -> Option<char> {
    let energy: f32 = block.iter().map(|&x| (x as f32) * (x as f32)).sum::<f32>() * block.len() as f32;
    if energy == 0.0 {
        return None;
    }
    let best = |fs: &[f32; 4]| {
        let p: Vec<f32> = fs.iter().map(|&f| goertzel(block, f, rate)).collect();
        let (i, &max) = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).expect("four");
        // The winner must stand well clear of the others and carry real energy.
        let clear = p.iter().enumerate().all(|(j, &v)| j == i || v * 10.0 < max);
        (clear && max > energy * 0.05).then_some(i)
    };
    Some(KEYS[best(&ROWS)?][best(&COLS)?])
}

/// The digits in `pcm`: one per run of blocks that detect the same key.
pub fn decode(pcm: &[i16], rate: u32) -> String {
    let block = (rate / 50) as usize;
    let mut out = String::new();
    let mut last = None;
    for b in pcm.chunks_exact(block) {
        let k = detect(b, rate);
        if let (Some(k), true) = (k, k != last) {
            out.push(k);
        }
        last = k;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_at_both_rates_and_bad_keys_are_refused() {
        for rate in [8000, 16000] {
            let all = "123A456B789C*0#D";
            assert_eq!(decode(&tones(all, rate).unwrap(), rate), all);
        }
        assert_eq!(decode(&tones("1#", 8000).unwrap(), 8000), "1#");
        assert_eq!(tones("12x", 8000), Err(DtmfError::NotAKey('x')));
        assert_eq!(tones("", 8000), Err(DtmfError::Length));
        assert_eq!(tones(&"1".repeat(33), 8000), Err(DtmfError::Length));
        let t = tones("5", 8000).unwrap();
        assert_eq!(t.len(), 800 + 560, "100 ms of tone and 70 ms of silence");
        assert_eq!(decode(&vec![0; 8000], 8000), "");
        // Speech-like noise is no key.
        let noise: Vec<i16> = (0..8000u32).map(|i| ((i.wrapping_mul(2654435761) >> 16) as i16) / 4).collect();
        assert_eq!(decode(&noise, 8000), "");
    }
}
