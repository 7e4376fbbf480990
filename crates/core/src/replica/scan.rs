//! Scans: merging replicas' pages of one partition, and the client's page cursor.

use super::ReplicaError;
use crate::causality::ItemState;
use crate::coordinator::Mergeable;
use std::collections::BTreeMap;

/// The result of a scan at the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanResult {
    pub items: Vec<(Vec<u8>, ItemState)>,
    /// Cursor of the next page, if the range may hold more.
    pub next: Option<String>,
}

/// One replica's scan page (or the merge of several), as a [`Mergeable`] for the read
/// coordinator.
#[derive(Clone, Debug)]
pub struct ScanMerge {
    items: BTreeMap<Vec<u8>, ItemState>,
    /// Every key up to (forward) / down to (reverse) this bound is known to all merged pages;
    /// `None` when every merged page reached the end of the range.
    bound: Option<Vec<u8>>,
    reverse: bool,
}

impl ScanMerge {
    pub fn from_page(items: Vec<(Vec<u8>, ItemState)>, exhausted: bool, reverse: bool) -> Self {
        let bound = if exhausted { None } else { items.last().map(|(k, _)| k.clone()) };
        ScanMerge { items: items.into_iter().collect(), bound, reverse }
    }

    fn within(&self, k: &[u8]) -> bool {
        match &self.bound {
            None => true,
            Some(b) if self.reverse => k >= b.as_slice(),
            Some(b) => k <= b.as_slice(),
        }
    }

    /// The client's page: at most `limit` live items below the merged bound, and the cursor.
    pub fn into_result(self, limit: usize) -> ScanResult {
        let mut within: Vec<(Vec<u8>, ItemState)> =
            self.items.iter().filter(|(k, _)| self.within(k)).map(|(k, s)| (k.clone(), s.clone())).collect();
        if self.reverse {
            within.reverse();
        }
        let mut items = Vec::new();
        let mut last_examined: Option<Vec<u8>> = None;
        let mut truncated = false;
        for (k, s) in within {
            if items.len() == limit {
                truncated = true;
                break;
            }
            last_examined = Some(k.clone());
            if !s.is_deleted() {
                items.push((k, s));
            }
        }
        let next = if truncated {
            last_examined.map(|k| encode_cursor(self.reverse, &k))
        } else {
            // Everything within the bound was examined; continue from the bound if pages were partial.
            self.bound.as_ref().map(|b| encode_cursor(self.reverse, b))
        };
        ScanResult { items, next }
    }
}

impl Mergeable for ScanMerge {
    fn merge_from(&mut self, other: &Self) {
        for (k, s) in &other.items {
            self.items.entry(k.clone()).and_modify(|mine| mine.merge(s)).or_insert_with(|| s.clone());
        }
        self.bound = match (self.bound.take(), other.bound.clone()) {
            (None, b) | (b, None) => b,
            (Some(a), Some(b)) => Some(if self.reverse { a.max(b) } else { a.min(b) }),
        };
    }

    /// Scans do not read-repair (a full-range repair is anti-entropy's job), so a page never
    /// asks for one.
    fn descends(&self, _other: &Self) -> bool {
        true
    }
}

pub fn encode_cursor(reverse: bool, last: &[u8]) -> String {
    use base64::Engine;
    let mut raw = vec![if reverse { b'r' } else { b'f' }];
    raw.extend_from_slice(last);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(cursor: &str) -> Result<(bool, Vec<u8>), ReplicaError> {
    use base64::Engine;
    let bad = || {
        ReplicaError::BadRequest(
            "malformed scan cursor: pass back the `next` value of the previous page".into(),
        )
    };
    if cursor.len() > 4 * crate::limits::SORT_KEY_BYTES_MAX {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let (&dir, last) = raw.split_first().ok_or_else(bad)?;
    match dir {
        b'f' => Ok((false, last.to_vec())),
        b'r' => Ok((true, last.to_vec())),
        _ => Err(bad()),
    }
}

/// Narrows `[from, to)` to continue after the cursor's last key.
pub fn apply_cursor(
    cursor: Option<&str>,
    reverse: bool,
    from: &mut Option<Vec<u8>>,
    to: &mut Option<Vec<u8>>,
) -> Result<(), ReplicaError> {
    let Some(c) = cursor else { return Ok(()) };
    let (c_reverse, last) = decode_cursor(c)?;
    if c_reverse != reverse {
        return Err(ReplicaError::BadRequest("cursor was issued for the other scan direction".into()));
    }
    if reverse {
        // Continue strictly below the last key returned.
        *to = Some(match to.take() {
            Some(t) if t < last => t,
            _ => last,
        });
    } else {
        // The smallest key strictly greater than `last` is `last ‖ 0x00`.
        let mut next = last;
        next.push(0);
        *from = Some(match from.take() {
            Some(f) if f > next => f,
            _ => next,
        });
    }
    Ok(())
}
