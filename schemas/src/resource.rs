//! Resource types, ids and versions: the other half of a resource's address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::r4::RESOURCE_TYPES;

/// An R4 resource type name, e.g. `Patient`. Only the 146 official names
/// parse, so a `ResourceType` is always a safe subject token and table value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(&'static str);

/// Why a string is not a resource address part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("'{0}' is not a FHIR R4 resource type")]
    UnknownType(String),
    #[error("'{0}' is not a valid FHIR id (1 to 64 characters of A-Z, a-z, 0-9, '-' and '.')")]
    InvalidId(String),
    #[error("'{0}' is not a valid version id (a positive integer)")]
    InvalidVersion(String),
}

impl ResourceType {
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        RESOURCE_TYPES
            .binary_search(&s)
            .map(|i| Self(RESOURCE_TYPES[i]))
            .map_err(|_| ResourceError::UnknownType(truncate(s)))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// All R4 resource types, sorted.
    pub fn all() -> impl Iterator<Item = ResourceType> {
        RESOURCE_TYPES.iter().map(|t| Self(t))
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for ResourceType {
    type Err = ResourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A FHIR resource id: `[A-Za-z0-9\-\.]{1,64}`, except `.` and `..`.
///
/// Those two match FHIR's pattern but are URL dot-segments (RFC 3986
/// 5.2.4): clients and proxies resolve `Patient/..` to `/fhir/{tenant}`
/// before sending, so a resource with such an id could be written (raw
/// request, Bundle entry) yet never read, and its `Location` would name
/// another URL. They are refused like any other invalid id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
        let dot_segment = s == "." || s == "..";
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(ok) && !dot_segment {
            Ok(Self(s.to_owned()))
        } else {
            Err(ResourceError::InvalidId(truncate(s)))
        }
    }

    /// A fresh server-assigned id (UUID v7: unique, and index-friendly
    /// because new ids sort after old ones). It must stay unguessable (v7
    /// keeps 62+ random bits): `POST` claims its id without an atomic batch
    /// on the ground that nobody can know it before it is published.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A resource version: 1 for the first write, then 2, 3, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    pub const FIRST: Version = Version(1);

    pub fn new(n: u64) -> Option<Self> {
        (n > 0).then_some(Self(n))
    }

    /// Parses a `meta.versionId` or `_history/{vid}` value.
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        // Digits only: `u64::from_str` would also take `+1`.
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .and_then(Self::new)
            .ok_or_else(|| ResourceError::InvalidVersion(truncate(s)))
    }

    /// Parses an `ETag`/`If-Match` value: `W/"3"` (or `"3"`, or bare `3`).
    pub fn parse_etag(s: &str) -> Result<Self, ResourceError> {
        let s = s.trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        let s = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
        Self::parse(s)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The weak ETag FHIR uses for this version: `W/"3"`.
    pub fn etag(self) -> String {
        format!("W/\"{}\"", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Error messages echo at most a short prefix of hostile input.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 70;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_types_parse_and_others_do_not() {
        assert_eq!(ResourceType::parse("Patient").unwrap().as_str(), "Patient");
        assert!(ResourceType::parse("ExplanationOfBenefit").is_ok());
        for bad in ["patient", "Patients", "", "Patient.", "*", "Resource", "DomainResource"] {
            assert!(ResourceType::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ResourceType::all().count(), 146);
    }

    #[test]
    fn ids_follow_the_fhir_id_rule() {
        for ok in ["a", "123", "a.b-c", &"x".repeat(64), "...", ".a", "a.."] {
            assert!(ResourceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a_b", "a b", "a/b", "..%2f", "a*", "a>", &"x".repeat(65), "é", ".", "..", "a\0"] {
            assert!(ResourceId::parse(bad).is_err(), "{bad}");
        }
        assert!(ResourceId::parse(ResourceId::generate().as_str()).is_ok());
    }

    #[test]
    fn etags_parse_in_the_forms_clients_send() {
        for s in ["W/\"3\"", "\"3\"", "3", " W/\"3\" "] {
            assert_eq!(Version::parse_etag(s).unwrap().get(), 3, "{s}");
        }
        for bad in ["W/\"0\"", "W/\"x\"", "", "-1", "+1", "W/\"+3\"", "18446744073709551616"] {
            assert!(Version::parse_etag(bad).is_err(), "{bad}");
        }
        assert_eq!(Version::FIRST.next().etag(), "W/\"2\"");
    }

    #[test]
    fn long_hostile_input_is_truncated_in_messages() {
        let err = ResourceType::parse(&"A".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 200);
    }
}
