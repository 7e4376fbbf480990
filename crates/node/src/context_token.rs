//! Signed causality tokens (issue #16): the context a client gets from a read and sends back
//! with its write says which versions the write supersedes. Unsigned, a client could forge
//! one naming versions it never saw and silently discard them. So the HTTP API hands out
//! `<vv>.<sig>`: `vv` is the version vector's token (`VersionVector::to_token`), `sig` is
//! base64url of a key id byte and the first 16 bytes of HMAC-SHA256 over the item's address
//! and `vv`, under a cluster key from the replicated metadata. Binding the address means a
//! token read from one item cannot be replayed on another.
//!
//! Keys rotate (`POST /v1/cluster/context-keys`); the newest signs and the last
//! [`CONTEXT_KEYS_KEPT`] verify, so a token stays good for two rotations. A forged, altered,
//! foreign or rotated-out token is refused (400 `malformed_context`); the peer protocol keeps
//! plain tokens, since only this node's own verified contexts travel there.
//!
//! [`CONTEXT_KEYS_KEPT`]: quorumdb_meta::auth::CONTEXT_KEYS_KEPT

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use quorumdb_core::causality::VersionVector;
use quorumdb_core::key::ItemKey;
use quorumdb_meta::auth::ContextKey;
use sha2::Sha256;

use crate::error::ApiError;

/// Bytes of the HMAC kept in a token: 128 bits, far beyond guessing over the network.
pub const MAC_BYTES: usize = 16;
/// Characters the signature adds (a dot, then base64 of the key id and the MAC).
pub const SIGNATURE_CHARS: usize = 1 + ((1 + MAC_BYTES) * 4).div_ceil(3);
// The longest context an accepted write can produce still fits the token limit once signed.
const _: () = assert!(
    quorumdb_core::causality::token_chars_len_max(quorumdb_core::limits::VERSION_VECTOR_LEN_MAX)
        + SIGNATURE_CHARS
        <= quorumdb_core::limits::CONTEXT_TOKEN_CHARS_MAX
);
/// Domain separation: a MAC of this kind is never valid as anything else.
const DOMAIN: &[u8] = b"quorumdb-context-v1";

/// HMAC-SHA256 under `key` of `domain` and each part, length-prefixed so that no two
/// different part lists feed the same bytes.
fn mac(key: &ContextKey, domain: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.key).expect("HMAC takes keys of any length");
    m.update(domain);
    for part in parts {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m
}

/// The signature (base64url of the key id and the truncated MAC) of `parts` under the newest
/// key; `None` while the cluster has no key yet. Shared with the session tokens
/// (`session_token`), which sign under their own domain.
pub(crate) fn signature(keys: &[ContextKey], domain: &[u8], parts: &[&[u8]]) -> Option<String> {
    let key = keys.last()?;
    let tag = mac(key, domain, parts).finalize().into_bytes();
    let mut sig = Vec::with_capacity(1 + MAC_BYTES);
    sig.push(key.id);
    sig.extend_from_slice(&tag[..MAC_BYTES]);
    Some(URL_SAFE_NO_PAD.encode(sig))
}

/// Checks a [`signature`] of `parts`; the error says why it does not verify.
pub(crate) fn check_signature(
    keys: &[ContextKey],
    domain: &[u8],
    parts: &[&[u8]],
    sig: &str,
) -> Result<(), &'static str> {
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "the signature is not base64url")?;
    let [id, tag @ ..] = sig.as_slice() else { return Err("the signature is empty") };
    if tag.len() != MAC_BYTES {
        return Err("the signature has the wrong length");
    }
    let key = keys
        .iter()
        .find(|k| k.id == *id)
        .ok_or("its signing key is not known here (rotated out, or from another cluster)")?;
    mac(key, domain, parts).verify_truncated_left(tag).map_err(|_| {
        "the signature does not match (the token was altered, forged, or made for something else)"
    })
}

fn item_parts<'a>(item: &'a ItemKey, body: &'a str) -> [&'a [u8]; 4] {
    [item.table.as_bytes(), &item.partition, &item.sort, body.as_bytes()]
}

/// The token to hand out for `vv` of `item`; `None` while the cluster has no key yet.
pub fn sign(keys: &[ContextKey], item: &ItemKey, vv: &VersionVector) -> Option<String> {
    let body = vv.to_token();
    let sig = signature(keys, DOMAIN, &item_parts(item, &body))?;
    Some(format!("{body}.{sig}"))
}

/// The version vector of a token this cluster signed for `item`.
pub fn verify(keys: &[ContextKey], item: &ItemKey, token: &str) -> Result<VersionVector, ApiError> {
    let bad = |why: &str| ApiError::MalformedContext(format!("malformed causality token: {why}"));
    let (body, sig) = token
        .rsplit_once('.')
        .ok_or_else(|| bad("it is not signed (expected <context>.<signature>, as reads return it)"))?;
    check_signature(keys, DOMAIN, &item_parts(item, body), sig).map_err(|why| {
        if why.starts_with("its signing key") {
            bad(&format!("{why}: read the item again"))
        } else {
            bad(why)
        }
    })?;
    Ok(VersionVector::from_token(body)?)
}

/// Items and contexts for the token tests here and in `session_token`.
#[cfg(test)]
pub(crate) mod testing {
    use quorumdb_core::causality::{ActorId, ItemState, Value, VersionVector};
    use quorumdb_core::key::ItemKey;

    pub fn item(k: &str) -> ItemKey {
        ItemKey { table: "t".into(), partition: k.as_bytes().to_vec(), sort: Vec::new() }
    }

    /// The context after `writes` writes by `actor`.
    pub fn vv_of(actor: u64, writes: usize) -> VersionVector {
        let mut state = ItemState::new();
        for _ in 0..writes {
            state = state.update(state.context(), Value::Data(b"v".to_vec()), ActorId(actor)).unwrap();
        }
        state.context().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{item, vv_of};
    use super::*;

    fn vv() -> VersionVector {
        vv_of(7, 2)
    }

    /// Proves a signed token verifies for its item and key, and its signature has the advertised length.
    #[test]
    fn round_trip() {
        let keys = [ContextKey { id: 0, key: [9; 32] }];
        let t = sign(&keys, &item("a"), &vv()).unwrap();
        assert_eq!(t.len() - vv().to_token().len(), SIGNATURE_CHARS);
        assert_eq!(verify(&keys, &item("a"), &t).unwrap(), vv());
    }

    /// Proves an altered body, another item, a forged signature, an unsigned token and a rotated-out key are each refused.
    #[test]
    fn forgeries_are_refused() {
        let keys = [ContextKey { id: 0, key: [9; 32] }, ContextKey { id: 1, key: [8; 32] }];
        let t = sign(&keys, &item("a"), &vv()).unwrap();
        let (body, sig) = t.rsplit_once('.').unwrap();
        let mut bigger = vv();
        bigger.merge(&vv_of(8, 1));
        let altered = format!("{}.{sig}", bigger.to_token());
        for (token, on) in [(altered.as_str(), "a"), (t.as_str(), "b"), (body, "a")] {
            let e = verify(&keys, &item(on), token).unwrap_err();
            assert_eq!(e.code(), "malformed_context", "{token} on {on}");
        }
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode([1u8; 1 + MAC_BYTES]));
        assert!(verify(&keys, &item("a"), &forged).is_err());
        // Signed with key 1; once only key 0 and a newer one are kept, it no longer verifies.
        let rotated = [ContextKey { id: 2, key: [7; 32] }];
        let e = verify(&rotated, &item("a"), &t).unwrap_err().to_string();
        assert!(e.contains("not known here"), "{e}");
        assert!(verify(&keys[..1], &item("a"), &sign(&keys[..1], &item("a"), &vv()).unwrap()).is_ok());
    }
}
