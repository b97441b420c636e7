use std::{fmt, str::FromStr};

use base64::Engine;
use rand::RngExt;

// AegisX patch: 144 random bits (24 base64 characters) instead of 96 (16). A session id is the
// only credential of a polling session, and 96 bits is below the 120 an unguessable id needs.
/// Random bytes in a session id.
const RANDOM_BYTES: usize = 18;
/// Characters of a session id: url-safe base64 of [`RANDOM_BYTES`], without padding.
const LEN: usize = RANDOM_BYTES / 3 * 4;

/// A session id made of 144 random bits, represented as a 24 char url-safe base64 string
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; LEN]);

impl Sid {
    /// A zeroed session id
    pub const ZERO: Self = Self([0u8; LEN]);
    /// Generate a new random session id (base64 24 chars)
    pub fn new() -> Self {
        Self::default()
    }

    /// Get the session id as a base64 24 chars string
    pub const fn as_str(&self) -> &str {
        // SAFETY: SID is always a base64 chars string
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// Error type for [`Sid::from_str`]
#[derive(Debug)]
pub enum SidDecodeError {
    /// Invalid base64 string
    InvalidBase64String,
    /// Invalid length
    InvalidLength,
}
impl fmt::Display for SidDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SidDecodeError::InvalidBase64String => write!(f, "Invalid url base64 string"),
            SidDecodeError::InvalidLength => write!(f, "Invalid sid length"),
        }
    }
}
impl std::error::Error for SidDecodeError {}

impl FromStr for Sid {
    type Err = SidDecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use SidDecodeError::*;

        let mut id = [0u8; LEN];

        // Verify the length of the string
        if s.len() != LEN {
            return Err(InvalidLength);
        }

        // Verify that the string is a valid base64 url safe string without padding
        for (idx, byte) in s.as_bytes()[0..LEN].iter().enumerate() {
            if byte.is_ascii_alphanumeric() || byte == &b'_' || byte == &b'-' {
                id[idx] = *byte;
            } else {
                return Err(InvalidBase64String);
            }
        }
        Ok(Sid(id))
    }
}

impl Default for Sid {
    fn default() -> Self {
        let mut random = [0u8; RANDOM_BYTES];
        let mut id = [0u8; LEN];

        rand::rng().fill(&mut random);

        base64::prelude::BASE64_URL_SAFE_NO_PAD
            .encode_slice(random, &mut id)
            .unwrap();

        Sid(id)
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}
impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

struct SidVisitor;
impl serde::de::Visitor<'_> for SidVisitor {
    type Value = Sid;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a valid sid")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Sid::from_str(v).map_err(serde::de::Error::custom)
    }
}
impl<'de> serde::Deserialize<'de> for Sid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SidVisitor)
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sid_is_144_bits_encoded_as_24_chars() {
        use base64::Engine;
        let sid = super::Sid::new();
        assert_eq!(sid.as_str().len(), 24);
        let decoded = base64::prelude::BASE64_URL_SAFE_NO_PAD
            .decode(sid.as_str())
            .unwrap();
        assert_eq!(decoded.len() * 8, 144);
    }

    use std::str::FromStr;

    use crate::sid::Sid;

    #[test]
    fn test_sid_from_str() {
        let id = Sid::new();
        let id2 = Sid::from_str(&id.to_string()).unwrap();
        assert_eq!(id, id2);
        let id = Sid::from_str("AA9AAA0AAzAAAAHsAAAAAAAA").unwrap();
        assert_eq!(id.to_string(), "AA9AAA0AAzAAAAHsAAAAAAAA");
    }

    #[test]
    fn test_sid_from_str_invalid() {
        let id = Sid::from_str("*$^ùù!").unwrap_err();
        assert_eq!(id.to_string(), "Invalid sid length");
        let id = Sid::from_str("aoassaAZDoin#zd{aoassaAZ").unwrap_err();
        assert_eq!(id.to_string(), "Invalid url base64 string");
        let id = Sid::from_str("aoassaAZDoinazd<aoassaAZ").unwrap_err();
        assert_eq!(id.to_string(), "Invalid url base64 string");
    }
}
