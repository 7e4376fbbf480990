//! A CRDT table's item: its state ([`CrdtState`]), the operations clients send
//! ([`CrdtOp`]), and their versioned binary encodings (states are stored as an item's value,
//! operations travel as a write's value from the gateway to the home replica that applies them).
//!
//! Actors are the replicas' `ActorId`s as `u64`.

use super::map::{CrdtMap, EntryKey, FieldKind, Payload, Target};
use super::{Clock, CrdtError, Orswot, PnCounter};
use std::collections::BTreeMap;

/// A CRDT table's type, declared with the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrdtKind {
    Counter,
    Set,
    Map,
}

impl CrdtKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CrdtKind::Counter => "counter",
            CrdtKind::Set => "set",
            CrdtKind::Map => "map",
        }
    }
}

/// One item's CRDT state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdtState {
    Counter(PnCounter<u64>),
    Set(Orswot<String, u64>),
    Map(CrdtMap<u64>),
}

/// A client operation on a CRDT item. `field` names a map field (absent for counter and set
/// tables); a remove carries the context of the read it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdtOp {
    Incr {
        field: Option<String>,
        by: i64,
    },
    Add {
        field: Option<String>,
        elem: String,
    },
    /// Removes `elem` from a set (or a map's set field), or with `elem` absent a whole map field.
    Remove {
        field: Option<String>,
        elem: Option<String>,
        ctx: Clock<u64>,
    },
    Assign {
        field: String,
        value: Vec<u8>,
    },
}

/// Longest field name or set element, in bytes.
pub const CRDT_NAME_BYTES_MAX: usize = 1024;

const STATE_VERSION: u8 = 1;
const OP_VERSION: u8 = 1;

fn no_fit(op: &CrdtOp, kind: CrdtKind) -> CrdtError {
    let what = match op {
        CrdtOp::Incr { field: None, .. } => "incr without a field",
        CrdtOp::Incr { .. } => "incr of a field",
        CrdtOp::Add { field: None, .. } => "add without a field",
        CrdtOp::Add { .. } => "add to a field",
        CrdtOp::Remove { field: None, .. } => "remove without a field",
        CrdtOp::Remove { .. } => "remove of a field",
        CrdtOp::Assign { .. } => "assign",
    };
    let fits = match kind {
        CrdtKind::Counter => "incr without a field",
        CrdtKind::Set => "add and remove of an element, without a field",
        CrdtKind::Map => "incr, add, remove and assign of a field",
    };
    CrdtError::OpDoesNotFit(format!("{what} does not fit a {} table; it takes {fits}", kind.as_str()))
}

impl CrdtState {
    pub fn empty(kind: CrdtKind) -> CrdtState {
        match kind {
            CrdtKind::Counter => CrdtState::Counter(PnCounter::default()),
            CrdtKind::Set => CrdtState::Set(Orswot::default()),
            CrdtKind::Map => CrdtState::Map(CrdtMap::default()),
        }
    }

    pub fn kind(&self) -> CrdtKind {
        match self {
            CrdtState::Counter(_) => CrdtKind::Counter,
            CrdtState::Set(_) => CrdtKind::Set,
            CrdtState::Map(_) => CrdtKind::Map,
        }
    }

    /// The causal context a remove following a read of this state carries (a counter has none).
    pub fn context(&self) -> Clock<u64> {
        match self {
            CrdtState::Counter(_) => BTreeMap::new(),
            CrdtState::Set(s) => s.context().clone(),
            CrdtState::Map(m) => m.context().clone(),
        }
    }

    /// Joins `other`; states of different kinds (an item stored before its table was declared
    /// again with another type) are refused.
    pub fn merge(&mut self, other: &CrdtState) -> Result<(), CrdtError> {
        match (self, other) {
            (CrdtState::Counter(a), CrdtState::Counter(b)) => a.merge(b),
            (CrdtState::Set(a), CrdtState::Set(b)) => a.merge(b),
            (CrdtState::Map(a), CrdtState::Map(b)) => a.merge(b),
            (a, b) => {
                return Err(CrdtError::Malformed(format!(
                    "a {} state cannot merge a {} state",
                    a.kind().as_str(),
                    b.kind().as_str()
                )))
            }
        }
        Ok(())
    }

    /// Applies a client operation as `actor` (the home replica applying it).
    pub fn apply(&mut self, actor: u64, op: CrdtOp) -> Result<(), CrdtError> {
        let kind = self.kind();
        match (self, op) {
            (CrdtState::Counter(c), CrdtOp::Incr { field: None, by }) => c.incr(actor, by),
            (CrdtState::Set(s), CrdtOp::Add { field: None, elem }) => s.add(actor, elem),
            (CrdtState::Set(s), CrdtOp::Remove { field: None, elem: Some(e), ctx }) => s.remove(&e, &ctx)?,
            (CrdtState::Map(m), CrdtOp::Incr { field: Some(f), by }) => m.incr(actor, &f, by),
            (CrdtState::Map(m), CrdtOp::Add { field: Some(f), elem }) => m.add(actor, &f, &elem),
            (CrdtState::Map(m), CrdtOp::Assign { field, value }) => m.assign(actor, &field, value),
            (CrdtState::Map(m), CrdtOp::Remove { field: Some(field), elem, ctx }) => {
                let kind = elem.is_some().then_some(FieldKind::Set);
                m.remove(Target { field, kind, elem }, &ctx)?
            }
            (_, op) => return Err(no_fit(&op, kind)),
        }
        Ok(())
    }

    /// Metadata size in (actor, counter) pairs (clock, dots, per-actor counts, deferred).
    pub fn metadata_len(&self) -> usize {
        match self {
            CrdtState::Counter(c) => c.incs.len() + c.decs.len(),
            CrdtState::Set(s) => s.metadata_len(),
            CrdtState::Map(m) => m.metadata_len(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.push(STATE_VERSION);
        match self {
            CrdtState::Counter(c) => {
                w.push(0);
                put_counts(&mut w, &c.incs);
                put_counts(&mut w, &c.decs);
            }
            CrdtState::Set(s) => {
                w.push(1);
                put_counts(&mut w, &s.clock);
                put_len(&mut w, s.entries.len());
                for (e, dots) in &s.entries {
                    put_str(&mut w, e);
                    put_counts(&mut w, dots);
                }
                put_len(&mut w, s.deferred.len());
                for (ctx, elems) in &s.deferred {
                    put_pairs(&mut w, ctx);
                    put_len(&mut w, elems.len());
                    for e in elems {
                        put_str(&mut w, e);
                    }
                }
            }
            CrdtState::Map(m) => {
                w.push(2);
                put_counts(&mut w, &m.clock);
                put_len(&mut w, m.entries.len());
                for (k, dots) in &m.entries {
                    put_str(&mut w, &k.field);
                    w.push(k.kind.tag());
                    put_str(&mut w, &k.elem);
                    put_len(&mut w, dots.len());
                    for (a, (c, p)) in dots {
                        put_u64(&mut w, *a);
                        put_u64(&mut w, *c);
                        match p {
                            Payload::Present => w.push(0),
                            Payload::Count(n) => {
                                w.push(1);
                                put_u64(&mut w, zigzag(*n));
                            }
                            Payload::Bytes(b) => {
                                w.push(2);
                                put_bytes(&mut w, b);
                            }
                        }
                    }
                }
                put_len(&mut w, m.deferred.len());
                for (ctx, targets) in &m.deferred {
                    put_pairs(&mut w, ctx);
                    put_len(&mut w, targets.len());
                    for t in targets {
                        put_target(&mut w, t);
                    }
                }
            }
        }
        w
    }

    pub fn decode(bytes: &[u8]) -> Result<CrdtState, CrdtError> {
        let mut r = Reader { b: bytes };
        if r.u8()? != STATE_VERSION {
            return Err(malformed("unknown CRDT state version"));
        }
        let state = match r.u8()? {
            0 => CrdtState::Counter(PnCounter { incs: r.counts()?, decs: r.counts()? }),
            1 => {
                let clock = r.counts()?;
                let mut entries = BTreeMap::new();
                for _ in 0..r.len()? {
                    let e = r.string()?;
                    entries.insert(e, r.counts()?);
                }
                let mut deferred = BTreeMap::new();
                for _ in 0..r.len()? {
                    let ctx = r.pairs()?;
                    let mut elems = Vec::new();
                    for _ in 0..r.len()? {
                        elems.push(r.string()?);
                    }
                    deferred.insert(ctx, elems);
                }
                CrdtState::Set(Orswot { clock, entries, deferred })
            }
            2 => {
                let clock = r.counts()?;
                let mut entries = BTreeMap::new();
                for _ in 0..r.len()? {
                    let field = r.string()?;
                    let kind = FieldKind::from_tag(r.u8()?).ok_or_else(|| malformed("unknown field kind"))?;
                    let elem = r.string()?;
                    let mut dots = BTreeMap::new();
                    for _ in 0..r.len()? {
                        let a = r.u64()?;
                        let c = r.u64()?;
                        let p = match r.u8()? {
                            0 => Payload::Present,
                            1 => Payload::Count(unzigzag(r.u64()?)),
                            2 => Payload::Bytes(r.bytes()?.to_vec()),
                            _ => return Err(malformed("unknown payload")),
                        };
                        dots.insert(a, (c, p));
                    }
                    entries.insert(EntryKey { field, kind, elem }, dots);
                }
                let mut deferred = BTreeMap::new();
                for _ in 0..r.len()? {
                    let ctx = r.pairs()?;
                    let mut targets = Vec::new();
                    for _ in 0..r.len()? {
                        targets.push(r.target()?);
                    }
                    deferred.insert(ctx, targets);
                }
                CrdtState::Map(CrdtMap { clock, entries, deferred })
            }
            _ => return Err(malformed("unknown CRDT type")),
        };
        r.end()?;
        Ok(state)
    }
}

/// Magic first byte of an encoded operation, so a plain value written to a CRDT table through
/// the ordinary put is refused instead of misread.
const OP_MAGIC: u8 = 0xC7;

impl CrdtOp {
    /// Checks the names' limits.
    pub fn validate(&self) -> Result<(), CrdtError> {
        let names: Vec<&str> = match self {
            CrdtOp::Incr { field, .. } => field.iter().map(String::as_str).collect(),
            CrdtOp::Add { field, elem } => field.iter().map(String::as_str).chain([elem.as_str()]).collect(),
            CrdtOp::Remove { field, elem, .. } => field.iter().chain(elem).map(String::as_str).collect(),
            CrdtOp::Assign { field, .. } => vec![field.as_str()],
        };
        match names.iter().find(|n| n.is_empty() || n.len() > CRDT_NAME_BYTES_MAX) {
            Some(n) => Err(CrdtError::OpDoesNotFit(format!(
                "a field name or element must be 1 to {CRDT_NAME_BYTES_MAX} bytes, got {} bytes",
                n.len()
            ))),
            None => Ok(()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![OP_MAGIC, OP_VERSION];
        let opt = |w: &mut Vec<u8>, s: &Option<String>| match s {
            Some(s) => {
                w.push(1);
                put_str(w, s);
            }
            None => w.push(0),
        };
        match self {
            CrdtOp::Incr { field, by } => {
                w.push(0);
                opt(&mut w, field);
                put_u64(&mut w, zigzag(*by));
            }
            CrdtOp::Add { field, elem } => {
                w.push(1);
                opt(&mut w, field);
                put_str(&mut w, elem);
            }
            CrdtOp::Remove { field, elem, ctx } => {
                w.push(2);
                opt(&mut w, field);
                opt(&mut w, elem);
                put_counts(&mut w, ctx);
            }
            CrdtOp::Assign { field, value } => {
                w.push(3);
                put_str(&mut w, field);
                put_bytes(&mut w, value);
            }
        }
        w
    }

    /// Decodes an operation; anything else (a plain value put to a CRDT table) is refused.
    pub fn decode(bytes: &[u8]) -> Result<CrdtOp, CrdtError> {
        let mut r = Reader { b: bytes };
        let not_op = || {
            CrdtError::OpDoesNotFit(
                "a CRDT table takes CRDT operations (POST /v1/tables/{table}/crdt/{key}), not plain values"
                    .into(),
            )
        };
        if r.u8().map_err(|_| not_op())? != OP_MAGIC || r.u8().map_err(|_| not_op())? != OP_VERSION {
            return Err(not_op());
        }
        let op = match r.u8()? {
            0 => CrdtOp::Incr { field: r.opt_string()?, by: unzigzag(r.u64()?) },
            1 => CrdtOp::Add { field: r.opt_string()?, elem: r.string()? },
            2 => CrdtOp::Remove { field: r.opt_string()?, elem: r.opt_string()?, ctx: r.counts()? },
            3 => CrdtOp::Assign { field: r.string()?, value: r.bytes()?.to_vec() },
            _ => return Err(not_op()),
        };
        r.end()?;
        Ok(op)
    }
}

/// Encodes a remove context (for the client's token).
pub fn encode_context(ctx: &Clock<u64>) -> Vec<u8> {
    let mut w = Vec::new();
    put_counts(&mut w, ctx);
    w
}

/// Decodes a remove context.
pub fn decode_context(bytes: &[u8]) -> Result<Clock<u64>, CrdtError> {
    let mut r = Reader { b: bytes };
    let ctx = r.counts()?;
    r.end()?;
    Ok(ctx)
}

fn malformed(what: &str) -> CrdtError {
    CrdtError::Malformed(what.to_owned())
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_u64(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    put_u64(w, n as u64);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_bytes(w, s.as_bytes());
}

fn put_counts(w: &mut Vec<u8>, m: &BTreeMap<u64, u64>) {
    put_len(w, m.len());
    for (a, c) in m {
        put_u64(w, *a);
        put_u64(w, *c);
    }
}

fn put_pairs(w: &mut Vec<u8>, p: &[(u64, u64)]) {
    put_len(w, p.len());
    for (a, c) in p {
        put_u64(w, *a);
        put_u64(w, *c);
    }
}

fn put_target(w: &mut Vec<u8>, t: &Target) {
    put_str(w, &t.field);
    w.push(t.kind.map_or(0xFF, FieldKind::tag));
    match &t.elem {
        Some(e) => {
            w.push(1);
            put_str(w, e);
        }
        None => w.push(0),
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, CrdtError> {
        let (&x, rest) = self.b.split_first().ok_or_else(|| malformed("truncated"))?;
        self.b = rest;
        Ok(x)
    }

    fn u64(&mut self) -> Result<u64, CrdtError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint too long"))
    }

    /// A count, bounded by the bytes left (every counted thing takes at least one byte), so a
    /// forged length cannot make a decoder allocate or loop beyond the input.
    fn len(&mut self) -> Result<usize, CrdtError> {
        let n = self.u64()?;
        if n > self.b.len() as u64 {
            return Err(malformed("length beyond the input"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CrdtError> {
        let n = self.len()?;
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(x)
    }

    fn string(&mut self) -> Result<String, CrdtError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| malformed("a name is not UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, CrdtError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(malformed("bad option tag")),
        }
    }

    fn counts(&mut self) -> Result<BTreeMap<u64, u64>, CrdtError> {
        let mut m = BTreeMap::new();
        for _ in 0..self.len()? {
            let a = self.u64()?;
            m.insert(a, self.u64()?);
        }
        Ok(m)
    }

    fn pairs(&mut self) -> Result<Vec<(u64, u64)>, CrdtError> {
        let mut p = Vec::new();
        for _ in 0..self.len()? {
            let a = self.u64()?;
            p.push((a, self.u64()?));
        }
        Ok(p)
    }

    fn target(&mut self) -> Result<Target, CrdtError> {
        let field = self.string()?;
        let kind = match self.u8()? {
            0xFF => None,
            t => Some(FieldKind::from_tag(t).ok_or_else(|| malformed("unknown field kind"))?),
        };
        let elem = self.opt_string()?;
        Ok(Target { field, kind, elem })
    }

    fn end(&self) -> Result<(), CrdtError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every state and operation kind survives its encoding, and that a plain value or
    /// a truncated encoding is refused rather than misread.
    #[test]
    fn codecs_round_trip_and_refuse_garbage() {
        let mut m = CrdtState::empty(CrdtKind::Map);
        m.apply(7, CrdtOp::Incr { field: Some("apple".into()), by: -3 }).unwrap();
        m.apply(7, CrdtOp::Add { field: Some("tags".into()), elem: "red".into() }).unwrap();
        m.apply(9, CrdtOp::Assign { field: "note".into(), value: b"hi".to_vec() }).unwrap();
        m.apply(9, CrdtOp::Remove { field: Some("x".into()), elem: None, ctx: BTreeMap::from([(1, 5)]) })
            .unwrap();
        let mut s = CrdtState::empty(CrdtKind::Set);
        s.apply(3, CrdtOp::Add { field: None, elem: "e".into() }).unwrap();
        s.apply(3, CrdtOp::Remove { field: None, elem: Some("f".into()), ctx: BTreeMap::from([(4, 1)]) })
            .unwrap();
        let mut c = CrdtState::empty(CrdtKind::Counter);
        c.apply(3, CrdtOp::Incr { field: None, by: 5 }).unwrap();
        c.apply(4, CrdtOp::Incr { field: None, by: -2 }).unwrap();
        for st in [m, s, c] {
            let enc = st.encode();
            assert_eq!(CrdtState::decode(&enc).unwrap(), st);
            assert!(CrdtState::decode(&enc[..enc.len() - 1]).is_err());
        }
        let op =
            CrdtOp::Remove { field: Some("a".into()), elem: Some("b".into()), ctx: BTreeMap::from([(1, 2)]) };
        assert_eq!(CrdtOp::decode(&op.encode()).unwrap(), op);
        assert!(matches!(CrdtOp::decode(b"{\"plain\":1}"), Err(CrdtError::OpDoesNotFit(_))));
    }

    /// Proves an operation that does not fit the table's type is refused with a message naming
    /// what the type takes.
    #[test]
    fn ops_that_do_not_fit_are_refused() {
        let mut c = CrdtState::empty(CrdtKind::Counter);
        let err = c.apply(1, CrdtOp::Add { field: None, elem: "x".into() }).unwrap_err();
        assert!(err.to_string().contains("does not fit a counter table"), "{err}");
        let mut m = CrdtState::empty(CrdtKind::Map);
        assert!(m.apply(1, CrdtOp::Incr { field: None, by: 1 }).is_err());
        assert!(CrdtOp::Add { field: None, elem: String::new() }.validate().is_err());
    }
}
