//! [`Oid`]: a git object id, the currency of every other API in this crate.
//!
//! It wraps `gix::ObjectId` so that callers never depend on `gix` types, and
//! it serialises as the 40-digit hex string that git itself prints. It knows
//! nothing about repositories: an `Oid` may name an object that no
//! repository holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ParseOidError;

/// A git object id (SHA-1), displayed and serialised as 40 hex digits.
///
/// ```
/// use orchex_git::Oid;
///
/// let oid: Oid = "4b825dc642cb6eb9a060e54bf8d69288fbee4904".parse()?;
/// assert_eq!(oid.to_string(), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
/// assert!("not hex".parse::<Oid>().is_err());
/// # Ok::<(), orchex_git::ParseOidError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(gix::ObjectId);

impl Oid {
    /// The id of the empty tree, `4b825dc…`.
    pub fn empty_tree() -> Oid {
        Oid(gix::ObjectId::empty_tree(gix::hash::Kind::Sha1))
    }

    /// The raw bytes of the id (20 for SHA-1).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The underlying `gix` id.
    pub(crate) fn to_gix(self) -> gix::ObjectId {
        self.0
    }
}

impl From<gix::ObjectId> for Oid {
    fn from(id: gix::ObjectId) -> Self {
        Oid(id)
    }
}

impl From<gix::Id<'_>> for Oid {
    fn from(id: gix::Id<'_>) -> Self {
        Oid(id.detach())
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.0.to_hex())
    }
}

impl FromStr for Oid {
    type Err = ParseOidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseOidError {
            input: s.chars().take(80).collect(),
        };
        if s.len() != gix::hash::Kind::Sha1.len_in_hex() {
            return Err(error());
        }
        gix::ObjectId::from_hex(s.as_bytes())
            .map(Oid)
            .map_err(|_| error())
    }
}

impl Serialize for Oid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Oid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
