//! Pure write decisions: given what the stream says about a resource and
//! what the client asks for, which event (if any) to append.

use schemas::{EventOp, Version};

use crate::CommandError;

/// The last event of a resource's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub version: Version,
    pub deleted: bool,
    /// Stream sequence of that event; the next write expects it.
    pub seq: u64,
}

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Store this body (create with a new id, or PUT).
    Put {
        if_match: Option<Version>,
    },
    Delete {
        if_match: Option<Version>,
    },
}

/// The event to append, and the subject sequence it must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub op: EventOp,
    pub version: Version,
    /// `Nats-Expected-Last-Subject-Sequence`: 0 means "no event yet".
    pub expected_seq: u64,
}

/// Decides a write. `Ok(None)` means there is nothing to do (deleting what
/// does not exist, or is deleted already: FHIR deletes are idempotent).
pub fn decide(current: Option<Current>, intent: Intent) -> Result<Option<Decision>, CommandError> {
    decide_after(current.map_or(0, |c| c.seq), current, intent)
}

/// [`decide`] on a subject whose last sequence is `tail_seq`: that is what
/// the next event must follow even when the messages after `current` (or
/// all of the subject's messages) were skipped as not genuine.
pub fn decide_after(tail_seq: u64, current: Option<Current>, intent: Intent) -> Result<Option<Decision>, CommandError> {
    let if_match = match intent {
        Intent::Put { if_match } | Intent::Delete { if_match } => if_match,
    };
    if let Some(wanted) = if_match {
        let live = current.filter(|c| !c.deleted).map(|c| c.version);
        if live != Some(wanted) {
            return Err(CommandError::PreconditionFailed { current: live });
        }
    }
    let expected_seq = tail_seq;
    let version = current.map_or(Version::FIRST, |c| c.version.next());
    Ok(match (intent, current) {
        (Intent::Put { .. }, None) => Some(Decision { op: EventOp::Create, version, expected_seq }),
        // Writing a deleted resource brings it back, with the next version.
        (Intent::Put { .. }, Some(c)) if c.deleted => Some(Decision { op: EventOp::Create, version, expected_seq }),
        (Intent::Put { .. }, Some(_)) => Some(Decision { op: EventOp::Update, version, expected_seq }),
        (Intent::Delete { .. }, None) => None,
        (Intent::Delete { .. }, Some(c)) if c.deleted => None,
        (Intent::Delete { .. }, Some(_)) => Some(Decision { op: EventOp::Delete, version, expected_seq }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Version {
        Version::new(n).unwrap()
    }

    fn at(version: u64, deleted: bool, seq: u64) -> Option<Current> {
        Some(Current { version: v(version), deleted, seq })
    }

    #[test]
    fn a_subject_holding_only_skipped_messages_is_created_after_them_at_version_one() {
        let d = decide_after(7, None, Intent::Put { if_match: None }).unwrap().unwrap();
        assert_eq!((d.op, d.version, d.expected_seq), (EventOp::Create, Version::FIRST, 7));
        let d = decide_after(9, at(2, false, 5), Intent::Put { if_match: None }).unwrap().unwrap();
        assert_eq!((d.version, d.expected_seq), (v(3), 9), "the version follows the genuine event");
    }

    #[test]
    fn given_nothing_a_put_creates_version_1_expecting_an_empty_subject() {
        let d = decide(None, Intent::Put { if_match: None }).unwrap().unwrap();
        assert_eq!(d, Decision { op: EventOp::Create, version: v(1), expected_seq: 0 });
    }

    #[test]
    fn given_version_3_a_put_writes_version_4_after_its_sequence() {
        let d = decide(at(3, false, 42), Intent::Put { if_match: None }).unwrap().unwrap();
        assert_eq!(d, Decision { op: EventOp::Update, version: v(4), expected_seq: 42 });
    }

    #[test]
    fn given_a_deleted_resource_a_put_recreates_it_with_the_next_version() {
        let d = decide(at(2, true, 9), Intent::Put { if_match: None }).unwrap().unwrap();
        assert_eq!(d, Decision { op: EventOp::Create, version: v(3), expected_seq: 9 });
    }

    #[test]
    fn if_match_must_name_the_live_version() {
        assert!(decide(at(3, false, 1), Intent::Put { if_match: Some(v(3)) }).is_ok());
        for (current, wanted) in [(at(3, false, 1), 2), (None, 1), (at(3, true, 1), 3)] {
            let err = decide(current, Intent::Put { if_match: Some(v(wanted)) }).unwrap_err();
            assert!(matches!(err, CommandError::PreconditionFailed { .. }), "{current:?} {wanted}");
        }
        let err = decide(at(3, false, 1), Intent::Delete { if_match: Some(v(1)) }).unwrap_err();
        assert!(matches!(err, CommandError::PreconditionFailed { current: Some(c) } if c == v(3)));
    }

    #[test]
    fn deleting_what_is_absent_or_deleted_appends_nothing() {
        assert_eq!(decide(None, Intent::Delete { if_match: None }).unwrap(), None);
        assert_eq!(decide(at(2, true, 5), Intent::Delete { if_match: None }).unwrap(), None);
    }

    #[test]
    fn deleting_a_live_resource_appends_a_delete_version() {
        let d = decide(at(2, false, 5), Intent::Delete { if_match: None }).unwrap().unwrap();
        assert_eq!(d, Decision { op: EventOp::Delete, version: v(3), expected_seq: 5 });
    }
}
