//! Names of kept point-in-time snapshots (`fhirstream replay --into NAME`),
//! each a PostgreSQL schema `snapshot_{name}` that the API serves read-only.

use std::fmt;

/// A validated snapshot name: 1 to 54 characters of `a-z`, `0-9` and `_`,
/// so that `snapshot_{name}` is a plain PostgreSQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotName(String);

/// Why a string is not a snapshot name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a snapshot name is 1 to 54 characters of a-z, 0-9 and '_'")]
pub struct SnapshotNameError;

impl SnapshotName {
    pub fn parse(s: &str) -> Result<Self, SnapshotNameError> {
        let ok =
            (1..=54).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok { Ok(Self(s.to_owned())) } else { Err(SnapshotNameError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PostgreSQL schema that holds the snapshot.
    pub fn schema(&self) -> String {
        format!("snapshot_{}", self.0)
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_plain_lowercase_identifiers() {
        assert_eq!(SnapshotName::parse("before_migration_2").unwrap().schema(), "snapshot_before_migration_2");
        for bad in ["", "A", "a-b", "a.b", "a\"b", "a b", "é", &"x".repeat(55)] {
            assert!(SnapshotName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
