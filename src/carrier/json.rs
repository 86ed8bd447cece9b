//! Zero-allocation JSON field helpers shared by the carriers' parsers.
//!
//! Carriers send numbers as strings (Twilio's `sequenceNumber`, Telnyx's
//! `sequence_number`), and serde's `borrow` does not reach through `Option`;
//! these read both without buffering or allocating per field per frame.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

/// A string or a number, read as u64 (`None`: absent, null or not a whole number).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Num(pub(crate) Option<u64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, not an untagged enum: untagged enums buffer the value
        // (an allocation per field per frame).
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string holding one")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(u64::try_from(v).ok()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num((v >= 0.0 && v.fract() == 0.0).then_some(v as u64)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Num, E> {
                Ok(Num(v.trim().parse().ok()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Option<Cow<str>>` that borrows from the input when it can (a plain field
/// would allocate a `String` per field per frame).
pub(crate) fn opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct W<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<W<'de>>::deserialize(d)?.map(|w| w.0))
}
