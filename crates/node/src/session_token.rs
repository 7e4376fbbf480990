//! Session tokens (issue #13): read-your-writes and monotonic reads at any `r`.
//!
//! A client that sends the `X-QuorumDB-Session` header (empty to start a session) gets it back,
//! updated, on every item read, put and delete. The token remembers, for the items the
//! session touched most recently (at most [`SESSION_ITEMS_MAX`]), the causal context the
//! session last saw of each: what its write produced, or what its read returned. A read that
//! presents the token is answered only by a merge of replies that holds that context: even at
//! `r=one` the coordinator waits for further replicas past `r` when the first replies are
//! older than the session, and fails `session_behind` (503) rather than answer older
//! (`ClientRequest::Read::floor`). So within a session a client never reads an item older
//! than its own last write or its own last read of it.
//!
//! Items are named by 64 bits of SHA-256 over their address, so the token stays small and says
//! nothing about keys; two items of one session sharing a name (odds 2^-64 per pair) would
//! only make a read wait for versions it cannot reach. Items beyond the newest
//! [`SESSION_ITEMS_MAX`] are forgotten, oldest first: the guarantees hold for those the
//! token still holds. Scans do not consult the token.
//!
//! Format: `s1.<entries>[.<signature>]`, entries `<name hex>:<vv token>` joined by `,`, most
//! recent last; the signature is the causality tokens' (`context_token`) under their cluster
//! keys in its own domain, so a forged or altered session token is a 400, and one kind of
//! token is never accepted as the other. A node without a key yet hands out and accepts
//! unsigned tokens, as it does causality tokens.

use quorumdb_core::causality::VersionVector;
use quorumdb_core::key::ItemKey;
use quorumdb_meta::auth::ContextKey;
use sha2::{Digest, Sha256};

use crate::context_token::{check_signature, signature};
use crate::error::ApiError;

/// The request and response header carrying the token.
pub const SESSION_HEADER: &str = "x-quorumdb-session";
/// Items a token remembers. 32 items of three replicas' contexts make a token of about 2 KB.
pub const SESSION_ITEMS_MAX: usize = 32;
/// Longest token accepted or handed out; entries are dropped, oldest first, to stay under it.
pub const SESSION_TOKEN_CHARS_MAX: usize = 8192;
// Even one entry of the largest context a write may create fits, so a session always holds
// at least the item it touched last.
const _: () = assert!(
    PREFIX.len()
        + 16
        + 1
        + quorumdb_core::causality::token_chars_len_max(quorumdb_core::limits::VERSION_VECTOR_LEN_MAX)
        + crate::context_token::SIGNATURE_CHARS
        <= SESSION_TOKEN_CHARS_MAX
);
const PREFIX: &str = "s1.";
const DOMAIN: &[u8] = b"quorumdb-session-v1";

/// What a session has seen: `(item name, context)`, most recent last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    entries: Vec<(u64, VersionVector)>,
}

fn name_of(item: &ItemKey) -> u64 {
    let mut h = Sha256::new();
    for part in [item.table.as_bytes(), &item.partition, &item.sort] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut name = [0u8; 8];
    name.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(name)
}

fn malformed(why: &str) -> ApiError {
    ApiError::MalformedSession(format!(
        "malformed session token: {why} (send an empty {SESSION_HEADER} header to start a new session)"
    ))
}

impl Session {
    /// The context a read of `item` must hold, if the session saw the item.
    pub fn floor(&self, item: &ItemKey) -> Option<VersionVector> {
        let name = name_of(item);
        self.entries.iter().find(|(n, _)| *n == name).map(|(_, vv)| vv.clone())
    }

    /// Records that the session saw `vv` of `item` (a write's result or a read's answer): the
    /// item's entry becomes the merge of both and the most recent; the oldest entries go when
    /// there are more than [`SESSION_ITEMS_MAX`].
    pub fn observe(&mut self, item: &ItemKey, vv: &VersionVector) {
        let name = name_of(item);
        let mut seen = vv.clone();
        if let Some(at) = self.entries.iter().position(|(n, _)| *n == name) {
            seen.merge(&self.entries.remove(at).1);
        }
        self.entries.push((name, seen));
        if self.entries.len() > SESSION_ITEMS_MAX {
            let excess = self.entries.len() - SESSION_ITEMS_MAX;
            self.entries.drain(..excess);
        }
    }

    /// Items remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn body(&self) -> String {
        let parts: Vec<String> =
            self.entries.iter().map(|(n, vv)| format!("{n:016x}:{}", vv.to_token())).collect();
        parts.join(",")
    }

    /// The token to hand back, signed under the newest key when the cluster has one.
    pub fn encode(&mut self, keys: &[ContextKey]) -> String {
        loop {
            let body = self.body();
            let token = match signature(keys, DOMAIN, &[body.as_bytes()]) {
                Some(sig) => format!("{PREFIX}{body}.{sig}"),
                None => format!("{PREFIX}{body}"),
            };
            if token.len() <= SESSION_TOKEN_CHARS_MAX || self.entries.len() <= 1 {
                return token;
            }
            self.entries.remove(0);
        }
    }

    /// Parses a token a client sent back. Empty starts a new session. With cluster keys the
    /// token must carry a valid signature; without, it must not claim one it cannot prove.
    pub fn decode(keys: &[ContextKey], token: &str) -> Result<Session, ApiError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(Session::default());
        }
        if token.len() > SESSION_TOKEN_CHARS_MAX {
            return Err(malformed(&format!("longer than {SESSION_TOKEN_CHARS_MAX} characters")));
        }
        let rest = token.strip_prefix(PREFIX).ok_or_else(|| malformed("it does not start with \"s1.\""))?;
        let body = match rest.split_once('.') {
            Some((body, sig)) => {
                if keys.is_empty() {
                    // Not the client's fault: this node has not yet learned the cluster's
                    // keys from the metadata. Dropping the session would silently void its
                    // guarantees, so refuse as unavailable; another node, or this one soon,
                    // can verify it.
                    return Err(ApiError::Unavailable(
                        "this node has not learned the cluster's signing keys yet and cannot verify the session token: retry, or ask another node".into(),
                    ));
                }
                check_signature(keys, DOMAIN, &[body.as_bytes()], sig).map_err(malformed)?;
                body
            }
            None if keys.is_empty() => rest,
            None => {
                return Err(malformed(
                    "it is not signed (expected s1.<entries>.<signature>, as responses carry it)",
                ))
            }
        };
        let mut entries = Vec::new();
        for entry in body.split(',').filter(|e| !e.is_empty()) {
            let (name, vv) =
                entry.split_once(':').ok_or_else(|| malformed("an entry is not <name>:<context>"))?;
            if name.len() != 16 {
                return Err(malformed("an item name is not 16 hex digits"));
            }
            let name =
                u64::from_str_radix(name, 16).map_err(|_| malformed("an item name is not 16 hex digits"))?;
            let vv = VersionVector::from_token(vv).map_err(|e| malformed(&e.to_string()))?;
            if entries.iter().any(|(n, _)| *n == name) {
                return Err(malformed("an item appears twice"));
            }
            entries.push((name, vv));
        }
        if entries.len() > SESSION_ITEMS_MAX {
            return Err(malformed(&format!("more than {SESSION_ITEMS_MAX} items")));
        }
        Ok(Session { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context_token::testing::{item, vv_of};

    const KEYS: [ContextKey; 1] = [ContextKey { id: 4, key: [3; 32] }];

    /// Proves a session round-trips through its signed token, merges what it sees of one
    /// item, and names items apart.
    #[test]
    fn round_trip_and_merge() {
        let mut s = Session::decode(&KEYS, "").unwrap();
        s.observe(&item("a"), &vv_of(1, 2));
        s.observe(&item("b"), &vv_of(2, 1));
        s.observe(&item("a"), &vv_of(3, 1));
        let token = s.encode(&KEYS);
        let back = Session::decode(&KEYS, &token).unwrap();
        assert_eq!(back, s);
        let mut both = vv_of(1, 2);
        both.merge(&vv_of(3, 1));
        assert_eq!(back.floor(&item("a")), Some(both));
        assert_eq!(back.floor(&item("b")), Some(vv_of(2, 1)));
        assert_eq!(back.floor(&item("c")), None);
    }

    /// Proves the session keeps only the newest SESSION_ITEMS_MAX items, oldest dropped first.
    #[test]
    fn bounded_oldest_first() {
        let mut s = Session::default();
        for i in 0..SESSION_ITEMS_MAX + 5 {
            s.observe(&item(&format!("k{i}")), &vv_of(i as u64 + 1, 1));
        }
        assert_eq!(s.len(), SESSION_ITEMS_MAX);
        assert_eq!(s.floor(&item("k0")), None);
        assert_eq!(s.floor(&item("k4")), None);
        assert!(s.floor(&item("k5")).is_some());
        let token = s.encode(&KEYS);
        assert!(token.len() <= SESSION_TOKEN_CHARS_MAX, "{}", token.len());
    }

    /// Proves an altered, unsigned, foreign-keyed or garbled token is refused with
    /// `malformed_session`, and a keyless node accepts only unsigned tokens.
    #[test]
    fn forgeries_are_refused() {
        let mut s = Session::default();
        s.observe(&item("a"), &vv_of(1, 1));
        let token = s.encode(&KEYS);
        let (body, sig) = token.rsplit_once('.').unwrap();
        let mut bigger = s.clone();
        bigger.observe(&item("a"), &vv_of(9, 5));
        let altered = format!("{PREFIX}{}.{sig}", bigger.body());
        let other = [ContextKey { id: 5, key: [1; 32] }];
        for (keys, t) in [
            (&KEYS[..], altered.as_str()),
            (&KEYS[..], body),
            (&other[..], token.as_str()),
            (&KEYS[..], "s1.zz:AQA"),
            (&KEYS[..], "x"),
        ] {
            let e = Session::decode(keys, t).unwrap_err();
            assert_eq!(e.code(), "malformed_session", "{t}");
            assert_eq!(e.status(), 400);
        }
        assert_eq!(Session::decode(&[], &token).unwrap_err().code(), "unavailable");
        let plain = Session::default().encode(&[]);
        assert_eq!(plain, "s1.");
        let mut s2 = s.clone();
        assert_eq!(Session::decode(&[], &s2.encode(&[])).unwrap(), s);
    }
}
