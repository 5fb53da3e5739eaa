//! Paging cursors: a page's position, sealed with an HMAC over the tenant,
//! the caller and the query, so a cursor is useless to anyone else, in any
//! other tenant, or with any other search.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::SearchError;
use super::sql::Position;

/// The key cursors are sealed with. Replicas behind one load balancer need
/// the same key; a process without a configured one makes its own, and its
/// cursors stop working when it restarts.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// A key derived from a configured secret.
    pub fn from_secret(secret: &str) -> Self {
        use sha2::Digest as _;
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// A random key for this process.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self(key)
    }

    fn mac(&self, binding: &str, payload: &[u8]) -> Hmac<Sha256> {
        // A 32-byte key is always accepted by HMAC.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(binding.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// Seals `pos` for the search described by `binding`.
    pub fn seal(&self, binding: &str, pos: &Position) -> String {
        let wire = Wire { b: pos.backward, k: pos.keys.clone(), t: pos.rtype.clone(), i: pos.id.clone() };
        let payload = serde_json::to_vec(&wire).unwrap_or_default();
        let tag = self.mac(binding, &payload).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The position in `token`, if it was sealed for exactly this search.
    pub fn open(&self, binding: &str, token: &str) -> Result<Position, SearchError> {
        let (payload, tag) = token.split_once('.').ok_or(SearchError::BadCursor)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| SearchError::BadCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SearchError::BadCursor)?;
        self.mac(binding, &payload).verify_slice(&tag).map_err(|_| SearchError::BadCursor)?;
        let w: Wire = serde_json::from_slice(&payload).map_err(|_| SearchError::BadCursor)?;
        Ok(Position { backward: w.b, keys: w.k, rtype: w.t, id: w.i })
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    b: bool,
    k: Vec<Option<String>>,
    t: String,
    i: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> Position {
        Position {
            backward: false,
            keys: vec![Some("1970-01-01".into()), None],
            rtype: "Patient".into(),
            id: "p1".into(),
        }
    }

    #[test]
    fn a_cursor_opens_for_the_search_it_was_sealed_for() {
        let key = CursorKey::from_secret("s");
        let token = key.seal("a\nalice\nname=x", &pos());
        assert_eq!(key.open("a\nalice\nname=x", &token).unwrap(), pos());
    }

    #[test]
    fn a_cursor_is_useless_in_another_tenant_for_another_caller_or_query() {
        let key = CursorKey::from_secret("s");
        let token = key.seal("a\nalice\nname=x", &pos());
        for other in ["b\nalice\nname=x", "a\nbob\nname=x", "a\nalice\nname=y"] {
            assert!(matches!(key.open(other, &token), Err(SearchError::BadCursor)), "{other}");
        }
        assert!(CursorKey::from_secret("t").open("a\nalice\nname=x", &token).is_err());
    }

    #[test]
    fn a_tampered_cursor_is_refused() {
        let key = CursorKey::from_secret("s");
        let token = key.seal("q", &pos());
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"b":false,"k":[],"t":"Patient","i":"zzz"}"#);
        assert!(key.open("q", &format!("{forged}.{tag}")).is_err());
        assert!(key.open("q", payload).is_err());
        assert!(key.open("q", "").is_err());
    }
}
