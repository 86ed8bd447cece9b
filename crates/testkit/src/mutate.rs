//! Deterministic mutation of real messages, for the garbage-input tests and
//! fuzz-style loops: a xorshift generator and a mutator that replaces,
//! truncates, inserts and removes bytes drawn from JSON's and base64's
//! alphabets, so most mutants still look almost like the original.

/// xorshift64: deterministic, seedable, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Bytes the mutator inserts and substitutes.
pub const ALPHABET: &[u8] = br#"{}[]:,"\0123456789abcdefAZ+/=-. eE\u"#;

/// One to four edits of `base`.
pub fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = ALPHABET[rng.below(ALPHABET.len())];
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, ALPHABET[rng.below(ALPHABET.len())]);
            }
            _ if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            _ => {}
        }
    }
    b
}

/// [`mutate`] for text (invalid UTF-8 replaced).
pub fn mutate_text(rng: &mut Rng, base: &str) -> String {
    String::from_utf8_lossy(&mutate(rng, base.as_bytes())).into_owned()
}
