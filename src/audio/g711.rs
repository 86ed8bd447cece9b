//! G.711 µ-law (PCMU) and A-law (PCMA) codecs.
//!
//! Pinned encoder variant: µ-law uses the 16-bit "BIAS 0x84 / CLIP 32635" algorithm
//! (ITU-T G.711 as usually implemented for 16-bit PCM); it differs from the Sun /
//! CPython `audioop` 14-bit variant by one code step on 381 negative inputs
//! (PROTOCOLS §7.1). A-law is the Sun algorithm (same as `audioop.lin2alaw`).
//! Decoding is identical across variants.
//!
//! Both directions are table driven and computed at compile time: a 256-entry
//! decode table and a 64 Ki-entry µ-law encode table indexed by the raw sample
//! bits, so per-frame work is one lookup per sample and allocates nothing.

/// µ-law byte for digital silence.
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law byte for (near) silence.
pub const ALAW_SILENCE: u8 = 0xD5;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encode one sample to µ-law by the algorithm (the reference for the table).
pub const fn ulaw_encode_sample(sample: i16) -> u8 {
    let s = sample as i32;
    let sign: i32 = if s < 0 { 0x80 } else { 0 };
    let mut mag = if s < 0 { -s } else { s };
    if mag > CLIP {
        mag = CLIP;
    }
    mag += BIAS;
    // exponent = index of highest set bit − 7; mag is in 132..=32767.
    let exponent = (31 - (mag as u32).leading_zeros()) as i32 - 7;
    let mantissa = (mag >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decode one µ-law byte.
pub const fn ulaw_decode_sample(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let e = ((u >> 4) & 7) as i32;
    let m = (u & 0x0F) as i32;
    let mag = (((m << 3) + BIAS) << e) - BIAS;
    if sign != 0 { -mag as i16 } else { mag as i16 }
}

/// Encode one sample to A-law (Sun algorithm on 13-bit magnitudes).
pub const fn alaw_encode_sample(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut pcm = (sample as i32) >> 3;
    let mask: i32;
    if pcm >= 0 {
        mask = 0xD5;
    } else {
        mask = 0x55;
        pcm = -pcm - 1;
    }
    let mut seg = 0;
    while seg < 8 && pcm > SEG_END[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    if seg < 2 {
        aval |= (pcm >> 1) & 0x0F;
    } else {
        aval |= (pcm >> seg) & 0x0F;
    }
    (aval ^ mask) as u8
}

/// Decode one A-law byte.
pub const fn alaw_decode_sample(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_sample(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_sample(i as u8);
        i += 1;
    }
    t
}

const fn build_ulaw_encode() -> [u8; 65536] {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        t[i] = ulaw_encode_sample(i as u16 as i16);
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
static ALAW_DECODE: [i16; 256] = build_alaw_decode();
static ULAW_ENCODE: [u8; 65536] = build_ulaw_encode();

/// Decode µ-law bytes into `out` (which must be at least `src.len()` long).
/// Returns the number of samples written.
#[inline]
pub fn ulaw_decode(src: &[u8], out: &mut [i16]) -> usize {
    let out = &mut out[..src.len()];
    for (o, &b) in out.iter_mut().zip(src) {
        *o = ULAW_DECODE[b as usize];
    }
    src.len()
}

/// Encode samples to µ-law into `out` (at least `src.len()` long).
#[inline]
pub fn ulaw_encode(src: &[i16], out: &mut [u8]) -> usize {
    let out = &mut out[..src.len()];
    for (o, &s) in out.iter_mut().zip(src) {
        *o = ULAW_ENCODE[s as u16 as usize];
    }
    src.len()
}

/// Decode A-law bytes into `out`.
#[inline]
pub fn alaw_decode(src: &[u8], out: &mut [i16]) -> usize {
    let out = &mut out[..src.len()];
    for (o, &b) in out.iter_mut().zip(src) {
        *o = ALAW_DECODE[b as usize];
    }
    src.len()
}

/// Encode samples to A-law into `out`.
#[inline]
pub fn alaw_encode(src: &[i16], out: &mut [u8]) -> usize {
    let out = &mut out[..src.len()];
    for (o, &s) in out.iter_mut().zip(src) {
        *o = alaw_encode_sample(s);
    }
    src.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from PROTOCOLS §7.1 (BIAS/CLIP variant), checked there against CPython.
    #[test]
    fn ulaw_encode_published_vectors() {
        let cases: &[(i16, u8)] = &[
            (0, 0xFF),
            (-1, 0x7F),
            (4, 0xFE),
            (-4, 0x7E),
            (-27, 0x7C),
            (100, 0xF2),
            (-100, 0x72),
            (1000, 0xCE),
            (-1000, 0x4E),
            (8000, 0xA0),
            (-8000, 0x20),
            (16000, 0x90),
            (32767, 0x80),
            (-32768, 0x00),
            (-31611, 0x01),
        ];
        for &(s, b) in cases {
            assert_eq!(ulaw_encode_sample(s), b, "sample {s}");
            let mut out = [0u8; 1];
            ulaw_encode(&[s], &mut out);
            assert_eq!(out[0], b, "table, sample {s}");
        }
    }

    #[test]
    fn ulaw_decode_published_vectors() {
        let cases: &[(u8, i16)] = &[
            (0x00, -32124),
            (0x01, -31100),
            (0x0F, -16764),
            (0x10, -15996),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0x81, 31100),
            (0xFE, 8),
            (0xFF, 0),
            (0xF2, 104),
            (0xCE, 988),
            (0xA0, 7932),
            (0x90, 15996),
        ];
        for &(b, s) in cases {
            assert_eq!(ulaw_decode_sample(b), s, "byte {b:#04x}");
        }
    }

    #[test]
    fn ulaw_table_matches_algorithm_everywhere() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ULAW_ENCODE[s as u16 as usize], ulaw_encode_sample(s));
        }
    }

    #[test]
    fn ulaw_roundtrip_is_idempotent_on_codes() {
        // decode(encode(decode(b))) == decode(b) for every code.
        for b in 0..=255u8 {
            let s = ulaw_decode_sample(b);
            assert_eq!(ulaw_decode_sample(ulaw_encode_sample(s)), s);
        }
    }

    #[test]
    fn alaw_published_vectors() {
        let cases: &[(i16, u8)] = &[(0, 0xD5), (-1, 0x55), (1000, 0xFA), (-1000, 0x7A), (32767, 0xAA), (-32768, 0x2A)];
        for &(s, b) in cases {
            assert_eq!(alaw_encode_sample(s), b, "sample {s}");
        }
        assert_eq!(alaw_decode_sample(0xD5), 8);
        assert_eq!(alaw_decode_sample(0x55), -8);
        for b in 0..=255u8 {
            let s = alaw_decode_sample(b);
            assert_eq!(alaw_encode_sample(s), b, "alaw code {b:#04x} must round-trip");
        }
    }
}
