//! Quorum coordination as plain state machines.
//!
//! A coordinator decides the fate of one client request that fans out to a key's replicas. It
//! does no I/O and reads no clock: the node shell sends the requests, feeds every response (or
//! known-down verdict) in, and calls `tick(now_ms)` from its timer. The machine only decides.
//!
//! ```text
//!   node shell                                 coordinator (this module)
//!   ──────────                                 ─────────────────────────
//!   ring.preference_list(hash, n) ──────────►  new(replicas, needed, deadline_ms)
//!   replica known down ─────────────────────►  skip(replica)                   ─┐ each event may
//!   send the request to the others                                              │ take the
//!   reply or transport error ───────────────►  on_response(replica, result)     │ decision, once:
//!   timer fires ────────────────────────────►  tick(now_ms)                    ─┘
//!                                                                                 Ok:  `needed` OK
//!   answer the client  ◄────────────────────  decision() = Some(Ok | Err)             replies in
//!   stop listening     ◄────────────────────  is_finished()                       Err: success is
//!   read repair        ◄────────────────────  repairs()  (reads only)                  impossible,
//!                                                                                  or deadline hit
//! ```
//!
//! The decision is sticky: the client gets one answer, as early as it is certain. Responses that
//! arrive after the decision are still recorded, because they matter after it: a read keeps
//! merging them so its read repair reaches replicas that answered late, and the outcomes show the
//! operator what really happened.
//!
//! Each replica's [`Outcome`] goes `Pending → Ok | Error | Skipped`, or `Pending → Timeout` at
//! the deadline. A reply that arrives after the deadline replaces `Timeout` (we now know the
//! replica answered), but never changes a decision already taken. Any other second reply for a
//! replica, and replies from replicas the request was not sent to, are ignored.
//!
//! Non-goals: coordinators do not retry, pick fallback replicas (sloppy quorum) or store hints;
//! replicas that failed or timed out are left to hinted handoff and anti-entropy.

use std::fmt;

use crate::placement::REQUEST_REPLICAS_MAX;

/// A replica state that a read can merge: a join-semilattice.
///
/// Laws, for all states `a`, `b`, `c` (writing `a ⊔ b` for `a` after `a.merge_from(&b)`, and
/// `a ⊒ b` for `a.descends(&b)`):
///
/// - commutative: `a ⊔ b = b ⊔ a`
/// - associative: `(a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)`
/// - idempotent:  `a ⊔ a = a`
/// - `descends` is the order of the lattice: `a ⊒ b ⇔ a ⊔ b = a`; in particular `a ⊔ b ⊒ a`.
///
/// The laws are what make a read's result independent of the order responses arrive in, and
/// what makes read repair safe to repeat.
pub trait Mergeable: Clone {
    /// Folds `other` into `self`: `self ← self ⊔ other`.
    fn merge_from(&mut self, other: &Self);
    /// Whether `self` already contains everything in `other` (`self ⊒ other`).
    fn descends(&self, other: &Self) -> bool;
}

/// What is known about one replica's part in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent; no reply yet.
    Pending,
    /// Replied with success.
    Ok,
    /// No reply by the deadline.
    Timeout,
    /// Replied with an error, or the transport failed; the [`Failure`] says which.
    Error(Failure),
    /// Known down; the request was not sent to it.
    Skipped,
}

impl Outcome {
    /// Whether the request may have taken effect at this replica although it did not succeed
    /// as far as the coordinator knows: no answer yet or ever, or an answer lost in transit.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Outcome::Pending | Outcome::Timeout => true,
            Outcome::Error(f) => f.outcome_unknown(),
            Outcome::Ok | Outcome::Skipped => false,
        }
    }
}

/// Why a replica's part of a request failed (a timeout is [`Outcome::Timeout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Never delivered (connection refused, no such peer, refused locally for its size): it
    /// certainly had no effect there.
    Unreachable(String),
    /// Sent, then the connection failed: the replica may have applied it.
    Lost(String),
    /// The replica answered with an error: its code and message.
    Refused { code: String, message: String },
    /// The replica's answer was malformed (did not decode, or did not fit the request).
    Corrupt(String),
}

impl Failure {
    /// Whether the request may have taken effect at the replica.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Failure::Lost(_) | Failure::Corrupt(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(m) => write!(f, "unreachable: {m}"),
            Failure::Lost(m) => write!(f, "connection lost: {m}"),
            Failure::Refused { message, .. } => f.write_str(message),
            Failure::Corrupt(m) => write!(f, "corrupt answer: {m}"),
        }
    }
}

/// A bare message is a refusal without a code (tests and scripts use it).
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Refused { code: "error".into(), message }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::from(message.to_owned())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // "no reply" rather than "timeout": a request can fail early, on errors, while a
            // replica is still within its deadline; calling that a timeout would mislead.
            Outcome::Pending => f.write_str("no reply"),
            Outcome::Ok => f.write_str("ok"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Error(message) => write!(f, "error: {message}"),
            Outcome::Skipped => f.write_str("down"),
        }
    }
}

/// Which kind of request a [`QuorumError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

/// A request could not reach its quorum. Carries what was needed, what was got, and every
/// replica's outcome at decision time, so the client and the logs can name the culprits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumError<R = String> {
    pub op: Op,
    /// Successful replies required (`w` or `r`).
    pub needed: usize,
    /// Successful replies received by decision time.
    pub got: usize,
    /// Every replica, in replica order, with its outcome at decision time (including `Ok` ones;
    /// the message lists only the others).
    pub outcomes: Vec<(R, Outcome)>,
    /// A read with a session floor ([`ReadCoordinator::with_floor`]) got its `needed` replies,
    /// but no merge of the replies it could get held the versions the session had seen.
    pub session_behind: bool,
}

impl<R> QuorumError<R> {
    /// The same error with replicas named by `name` (node ids become names for people).
    pub fn named<T>(self, name: impl Fn(&R) -> T) -> QuorumError<T> {
        QuorumError {
            op: self.op,
            needed: self.needed,
            got: self.got,
            outcomes: self.outcomes.iter().map(|(r, o)| (name(r), o.clone())).collect(),
            session_behind: self.session_behind,
        }
    }
}

impl<R: fmt::Debug + fmt::Display> std::error::Error for QuorumError<R> {}

impl<R: fmt::Display> fmt::Display for QuorumError<R> {
    /// `quorum not reached: needed 3 acks, got 2 (n4: timeout)` for writes,
    /// `quorum not reached: needed 2 replies, got 1 (n2: timeout, n3: error: disk full)` for reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.session_behind {
            write!(
                f,
                "session not satisfied: {} replicas answered and none of them, merged, holds the versions this session already saw",
                self.got
            )?;
            return fmt_failed(f, &self.outcomes);
        }
        let unit = match (self.op, self.needed) {
            (Op::Write, 1) => "ack",
            (Op::Write, _) => "acks",
            (Op::Read, 1) => "reply",
            (Op::Read, _) => "replies",
        };
        write!(f, "quorum not reached: needed {} {unit}, got {}", self.needed, self.got)?;
        fmt_failed(f, &self.outcomes)
    }
}

/// ` (n2: timeout, n3: error: disk full)`: the replicas that did not answer OK, if any.
fn fmt_failed<R: fmt::Display>(f: &mut fmt::Formatter<'_>, outcomes: &[(R, Outcome)]) -> fmt::Result {
    let mut failed = outcomes.iter().filter(|(_, outcome)| *outcome != Outcome::Ok);
    if let Some((replica, outcome)) = failed.next() {
        write!(f, " ({replica}: {outcome}")?;
        for (replica, outcome) in failed {
            write!(f, ", {replica}: {outcome}")?;
        }
        f.write_str(")")?;
    }
    Ok(())
}

/// The bookkeeping both coordinators share: who was asked, what each said, and whether the
/// deadline has passed. It knows nothing of payloads; the coordinators add those.
#[derive(Clone, Debug)]
struct Tally<R> {
    /// Every replica of the request, in preference-list order, with its outcome so far. Errors
    /// and the `outcomes()` accessors report in this order, so it is stable and meaningful.
    outcomes: Vec<(R, Outcome)>,
    /// Successful replies needed for success (`w` or `r`).
    needed: usize,
    /// At or after this time, replicas that have not replied count as timed out.
    deadline_ms: u64,
    /// Set by the first `tick` at or after the deadline. From then on the request is finished
    /// even if late replies keep arriving.
    deadline_passed: bool,
}

impl<R: Clone + PartialEq + fmt::Debug> Tally<R> {
    fn new(replicas: Vec<R>, needed: usize, deadline_ms: u64) -> Self {
        // Programmer errors, not runtime conditions: `needed` comes from a consistency level
        // already resolved against the replication factor, and replicas from the ring.
        assert!(!replicas.is_empty(), "a request needs at least one replica");
        assert!(replicas.len() <= REQUEST_REPLICAS_MAX, "more replicas than any request can have");
        assert!(1 <= needed && needed <= replicas.len(), "needed must be in 1..=replicas");
        for (i, replica) in replicas.iter().enumerate() {
            // A duplicate would let one replica's reply count twice towards the quorum.
            assert!(!replicas.iter().take(i).any(|r| r == replica), "duplicate replica {replica:?}");
        }
        let outcomes = replicas.into_iter().map(|r| (r, Outcome::Pending)).collect();
        Tally { outcomes, needed, deadline_ms, deadline_passed: false }
    }

    /// Records a reply. Returns the replica's position if the reply was accepted: the replica is
    /// part of the request and had not replied (a reply after its timeout is accepted).
    fn record<Q: PartialEq + ?Sized>(&mut self, replica: &Q, outcome: Outcome) -> Option<usize>
    where
        R: std::borrow::Borrow<Q>,
    {
        let index = self.outcomes.iter().position(|(r, _)| r.borrow() == replica)?;
        let slot = &mut self.outcomes.get_mut(index)?.1;
        match slot {
            Outcome::Pending | Outcome::Timeout => {
                *slot = outcome;
                Some(index)
            }
            Outcome::Ok | Outcome::Error(_) | Outcome::Skipped => None,
        }
    }

    fn skip<Q: PartialEq + ?Sized>(&mut self, replica: &Q)
    where
        R: std::borrow::Borrow<Q>,
    {
        // Only a replica we are still waiting for can be written off; one that already answered
        // has told us more than a liveness guess can.
        if let Some((_, outcome)) = self.outcomes.iter_mut().find(|(r, _)| (*r).borrow() == replica) {
            if *outcome == Outcome::Pending {
                *outcome = Outcome::Skipped;
            }
        }
    }

    fn tick(&mut self, now_ms: u64) {
        if now_ms < self.deadline_ms || self.deadline_passed {
            return;
        }
        self.deadline_passed = true;
        for (_, outcome) in &mut self.outcomes {
            if *outcome == Outcome::Pending {
                *outcome = Outcome::Timeout;
            }
        }
    }

    fn count(&self, wanted: &Outcome) -> usize {
        self.outcomes.iter().filter(|(_, outcome)| outcome == wanted).count()
    }

    fn succeeded(&self) -> bool {
        self.count(&Outcome::Ok) >= self.needed
    }

    /// Success is impossible once even every pending replica answering OK would not be enough.
    /// At the deadline nothing is pending any more, so this also covers timeouts.
    fn failed(&self) -> bool {
        self.count(&Outcome::Ok) + self.count(&Outcome::Pending) < self.needed
    }

    fn error(&self, op: Op) -> QuorumError<R> {
        QuorumError {
            op,
            needed: self.needed,
            got: self.count(&Outcome::Ok),
            outcomes: self.outcomes.clone(),
            session_behind: false,
        }
    }

    fn is_finished(&self) -> bool {
        self.deadline_passed || self.count(&Outcome::Pending) == 0
    }
}

/// Decides a write: success once `needed` replicas acknowledged it.
#[derive(Clone, Debug)]
pub struct WriteCoordinator<R = String> {
    tally: Tally<R>,
    /// Further quorums the write needs, each as (positions in the tally, acks needed among
    /// them): during a layout transition, `needed` acks in the replica set of every live
    /// layout version ([`WriteCoordinator::joint`]).
    groups: Vec<(Vec<usize>, usize)>,
    /// The answer for the client, set once and never changed.
    decision: Option<Result<(), QuorumError<R>>>,
}

impl<R: Clone + PartialEq + fmt::Debug> WriteCoordinator<R> {
    /// A write sent to `replicas` (in preference-list order) that needs `needed` acks by
    /// `deadline_ms`. Panics unless `1 <= needed <= replicas.len() <= REPLICATION_FACTOR_MAX` and
    /// the replicas are distinct.
    pub fn new(replicas: Vec<R>, needed: usize, deadline_ms: u64) -> Self {
        WriteCoordinator {
            tally: Tally::new(replicas, needed, deadline_ms),
            groups: Vec::new(),
            decision: None,
        }
    }

    /// A write that needs, for each `(set, needed)` of `groups`, `needed` acks from the
    /// replicas of `set`: a write during a layout transition, acknowledged only once a quorum
    /// of the old owners *and* a quorum of the new ones hold it. `replicas` is the union of
    /// the sets (the request goes to all of them); an ack counts in every set that names its
    /// replica. Panics unless every set is a non-empty subset of `replicas` with
    /// `1 <= needed <= set.len()`, and `groups` is not empty.
    pub fn joint(replicas: Vec<R>, groups: Vec<(Vec<R>, usize)>, deadline_ms: u64) -> Self {
        assert!(!groups.is_empty(), "a joint write needs at least one replica set");
        let positions: Vec<(Vec<usize>, usize)> = groups
            .into_iter()
            .map(|(set, needed)| {
                assert!(1 <= needed && needed <= set.len(), "needed must be in 1..=set");
                let at = set
                    .iter()
                    .map(|r| {
                        replicas.iter().position(|x| x == r).expect("every set member is one of the replicas")
                    })
                    .collect();
                (at, needed)
            })
            .collect();
        let needed = positions.iter().map(|(_, n)| *n).max().unwrap_or(1);
        let mut c = WriteCoordinator {
            tally: Tally::new(replicas, needed, deadline_ms),
            groups: positions,
            decision: None,
        };
        // The tally's own count must not decide on its own: any `needed` acks would do for it.
        c.tally.needed = 1;
        c
    }

    /// Marks a replica known to be down: the write is not sent to it. Fails the write at once if
    /// too few replicas remain to reach the quorum.
    pub fn skip<Q: PartialEq + ?Sized>(&mut self, replica: &Q)
    where
        R: std::borrow::Borrow<Q>,
    {
        self.tally.skip(replica);
        self.decide();
    }

    /// Feeds a replica's reply in. Unknown replicas and second replies are ignored.
    pub fn on_response<Q: PartialEq + ?Sized>(&mut self, replica: &Q, result: Result<(), Failure>)
    where
        R: std::borrow::Borrow<Q>,
    {
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(message) => Outcome::Error(message),
        };
        self.tally.record(replica, outcome);
        self.decide();
    }

    /// The request to `replica` timed out before the coordinator's own deadline.
    pub fn on_timeout<Q: PartialEq + ?Sized>(&mut self, replica: &Q)
    where
        R: std::borrow::Borrow<Q>,
    {
        self.tally.record(replica, Outcome::Timeout);
        self.decide();
    }

    /// Advances time. At or after the deadline, replicas still pending time out and an undecided
    /// write fails.
    pub fn tick(&mut self, now_ms: u64) {
        self.tally.tick(now_ms);
        self.decide();
    }

    /// The answer for the client, once known.
    pub fn decision(&self) -> Option<Result<(), QuorumError<R>>> {
        self.decision.clone()
    }

    /// Every replica with its outcome so far, in replica order.
    pub fn outcomes(&self) -> &[(R, Outcome)] {
        &self.tally.outcomes
    }

    /// Whether every replica has answered (or been skipped) or the deadline has passed; the shell
    /// may stop listening for this request.
    pub fn is_finished(&self) -> bool {
        self.tally.is_finished()
    }

    fn decide(&mut self) {
        if self.decision.is_some() {
            return;
        }
        if self.groups.is_empty() {
            if self.tally.succeeded() {
                self.decision = Some(Ok(()));
            } else if self.tally.failed() {
                self.decision = Some(Err(self.tally.error(Op::Write)));
            }
            return;
        }
        let count = |at: &[usize], wanted: &Outcome| {
            at.iter().filter(|i| self.tally.outcomes.get(**i).is_some_and(|(_, o)| o == wanted)).count()
        };
        // The first set that can no longer reach its quorum fails the write, and the error
        // names that set's need and count.
        for (at, needed) in &self.groups {
            let ok = count(at, &Outcome::Ok);
            if ok + count(at, &Outcome::Pending) < *needed {
                let mut e = self.tally.error(Op::Write);
                e.needed = *needed;
                e.got = ok;
                self.decision = Some(Err(e));
                return;
            }
        }
        if self.groups.iter().all(|(at, needed)| count(at, &Outcome::Ok) >= *needed) {
            self.decision = Some(Ok(()));
        }
    }
}

/// Decides a read: success once `needed` replicas replied, with the merge of their states; then
/// keeps merging late replies to work out which replicas need read repair.
#[derive(Clone, Debug)]
pub struct ReadCoordinator<S: Mergeable, R = String> {
    tally: Tally<R>,
    /// The state each replica replied with, by replica position; kept to find stale replicas
    /// once every reply is in.
    states: Vec<Option<S>>,
    /// Merge of every OK reply so far, including replies after the decision.
    merged: Option<S>,
    /// The answer for the client, set once and never changed. Its state is the merge at decision
    /// time: later replies improve repairs, not an answer already given.
    decision: Option<Result<S, QuorumError<R>>>,
    /// A session's floor: the read answers only with a merge this accepts (see
    /// [`with_floor`](Self::with_floor)).
    floor: Option<Floor<S>>,
}

/// What a session requires of a read's answer: a predicate over the merged state.
#[derive(Clone)]
pub struct Floor<S>(std::sync::Arc<dyn Fn(&S) -> bool + Send + Sync>);

impl<S> Floor<S> {
    pub fn new(accepts: impl Fn(&S) -> bool + Send + Sync + 'static) -> Self {
        Floor(std::sync::Arc::new(accepts))
    }

    fn accepts(&self, state: &S) -> bool {
        (self.0)(state)
    }
}

impl<S> fmt::Debug for Floor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Floor(..)")
    }
}

impl<S: Mergeable, R: Clone + PartialEq + fmt::Debug> ReadCoordinator<S, R> {
    /// A read sent to `replicas` (in preference-list order) that needs `needed` replies by
    /// `deadline_ms`. Panics unless `1 <= needed <= replicas.len() <= REPLICATION_FACTOR_MAX` and
    /// the replicas are distinct.
    pub fn new(replicas: Vec<R>, needed: usize, deadline_ms: u64) -> Self {
        let states = vec![None; replicas.len()];
        ReadCoordinator {
            tally: Tally::new(replicas, needed, deadline_ms),
            states,
            merged: None,
            decision: None,
            floor: None,
        }
    }

    /// Requires the answer to satisfy `floor` (a session's read-your-writes and monotonic-read
    /// floor): the read then answers at the first moment it has `needed` replies *and* their
    /// merge satisfies it, waiting for further replicas past `needed` if it must; once no reply
    /// is pending (or the deadline passed) without that, it fails with
    /// [`QuorumError::session_behind`] rather than answer older than the session.
    pub fn with_floor(mut self, floor: Floor<S>) -> Self {
        self.floor = Some(floor);
        self
    }

    /// Marks a replica known to be down: the read is not sent to it. Fails the read at once if
    /// too few replicas remain to reach the quorum.
    pub fn skip<Q: PartialEq + ?Sized>(&mut self, replica: &Q)
    where
        R: std::borrow::Borrow<Q>,
    {
        self.tally.skip(replica);
        self.decide();
    }

    /// Feeds a replica's reply in. Unknown replicas and second replies are ignored.
    pub fn on_response<Q: PartialEq + ?Sized>(&mut self, replica: &Q, result: Result<S, Failure>)
    where
        R: std::borrow::Borrow<Q>,
    {
        match result {
            Ok(state) => {
                if let Some(index) = self.tally.record(replica, Outcome::Ok) {
                    match &mut self.merged {
                        Some(merged) => merged.merge_from(&state),
                        None => self.merged = Some(state.clone()),
                    }
                    if let Some(slot) = self.states.get_mut(index) {
                        *slot = Some(state);
                    }
                }
            }
            Err(message) => {
                self.tally.record(replica, Outcome::Error(message));
            }
        }
        self.decide();
    }

    /// The request to `replica` timed out before the coordinator's own deadline.
    pub fn on_timeout<Q: PartialEq + ?Sized>(&mut self, replica: &Q)
    where
        R: std::borrow::Borrow<Q>,
    {
        self.tally.record(replica, Outcome::Timeout);
        self.decide();
    }

    /// Advances time. At or after the deadline, replicas still pending time out and an undecided
    /// read fails.
    pub fn tick(&mut self, now_ms: u64) {
        self.tally.tick(now_ms);
        self.decide();
    }

    /// The answer for the client, once known.
    pub fn decision(&self) -> Option<Result<S, QuorumError<R>>> {
        self.decision.clone()
    }

    /// Every replica with its outcome so far, in replica order.
    pub fn outcomes(&self) -> &[(R, Outcome)] {
        &self.tally.outcomes
    }

    /// Whether every replica has answered (or been skipped) or the deadline has passed.
    pub fn is_finished(&self) -> bool {
        self.tally.is_finished()
    }

    /// The merge of every OK reply so far, including replies after the decision.
    pub fn merged(&self) -> Option<&S> {
        self.merged.as_ref()
    }

    /// Read repair: each replica that replied OK with a state that does not descend
    /// [`merged`](Self::merged), paired with the merged state to send it. Call once
    /// [`is_finished`](Self::is_finished); earlier, a later reply may still extend the merge.
    /// Replicas that failed, timed out or were skipped are not repaired here: we do not know
    /// what they hold, and getting data to them is hinted handoff's and anti-entropy's job.
    pub fn repairs(&self) -> Vec<(R, S)> {
        let Some(merged) = &self.merged else { return Vec::new() };
        self.tally
            .outcomes
            .iter()
            .zip(&self.states)
            .filter_map(|((replica, _), state)| {
                let stale = state.as_ref().is_some_and(|s| !s.descends(merged));
                stale.then(|| (replica.clone(), merged.clone()))
            })
            .collect()
    }

    fn decide(&mut self) {
        if self.decision.is_some() {
            return;
        }
        if self.tally.succeeded() {
            // `succeeded` implies at least one OK reply, hence a merged state.
            if let Some(merged) = &self.merged {
                if self.floor.as_ref().is_none_or(|floor| floor.accepts(merged)) {
                    self.decision = Some(Ok(merged.clone()));
                } else if self.tally.is_finished() {
                    let mut e = self.tally.error(Op::Read);
                    e.session_behind = true;
                    self.decision = Some(Err(e));
                }
            }
        } else if self.tally.failed() {
            self.decision = Some(Err(self.tally.error(Op::Read)));
        }
    }
}

/// Item states are what reads merge in production. `ItemState::merge` is the join and
/// `ItemState::descends` its order; causality.rs states and property-tests the laws.
impl Mergeable for crate::causality::ItemState {
    fn merge_from(&mut self, other: &Self) {
        self.merge(other);
    }
    fn descends(&self, other: &Self) -> bool {
        crate::causality::ItemState::descends(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::REPLICATION_FACTOR_MAX;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A grow-only set: the simplest state satisfying the `Mergeable` laws.
    #[derive(Clone, Debug, PartialEq, Eq, Default)]
    struct Set(BTreeSet<u32>);

    impl Mergeable for Set {
        fn merge_from(&mut self, other: &Self) {
            self.0.extend(other.0.iter().copied());
        }
        fn descends(&self, other: &Self) -> bool {
            self.0.is_superset(&other.0)
        }
    }

    fn set(values: &[u32]) -> Set {
        Set(values.iter().copied().collect())
    }

    fn names(replicas: &[&str]) -> Vec<String> {
        replicas.iter().map(|r| r.to_string()).collect()
    }

    /// Proves a write with needed = all replicas succeeds only on the last ack.
    #[test]
    fn write_needs_every_replica_when_needed_is_all() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3"]), 3, 100);
        w.on_response("n1", Ok(()));
        w.on_response("n2", Ok(()));
        assert_eq!(w.decision(), None);
        assert!(!w.is_finished());
        w.on_response("n3", Ok(()));
        assert_eq!(w.decision(), Some(Ok(())));
        assert!(w.is_finished());
    }

    /// Proves a write fails as soon as errors make the quorum impossible, naming the pending
    /// replica as "no reply" rather than as a timeout.
    #[test]
    fn write_fails_early_on_errors() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        w.on_response("n1", Err("disk full".into()));
        assert_eq!(w.decision(), None);
        w.on_response("n2", Err("io error".into()));
        let err = w.decision().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "quorum not reached: needed 2 acks, got 0 \
             (n1: error: disk full, n2: error: io error, n3: no reply)"
        );
        assert!(!w.is_finished(), "n3 may still answer");
    }

    /// Proves every replica failing fails the write, with all of them named.
    #[test]
    fn write_all_errors() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2"]), 1, 100);
        w.on_response("n2", Err("b".into()));
        assert_eq!(w.decision(), None);
        w.on_response("n1", Err("a".into()));
        assert_eq!(
            w.decision().unwrap().unwrap_err().to_string(),
            "quorum not reached: needed 1 ack, got 0 (n1: error: a, n2: error: b)"
        );
        assert!(w.is_finished());
    }

    /// Proves the timeout message has exactly the documented shape.
    #[test]
    fn write_timeout_message() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n4"]), 3, 100);
        w.on_response("n1", Ok(()));
        w.on_response("n2", Ok(()));
        w.tick(99);
        assert_eq!(w.decision(), None);
        w.tick(100);
        assert_eq!(
            w.decision().unwrap().unwrap_err().to_string(),
            "quorum not reached: needed 3 acks, got 2 (n4: timeout)"
        );
        assert!(w.is_finished());
    }

    /// Proves duplicate replies and replies from unknown replicas are ignored: an ack cannot be
    /// counted twice, and a later error cannot overwrite it.
    #[test]
    fn duplicate_and_unknown_replies_ignored() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        w.on_response("n1", Ok(()));
        w.on_response("n1", Ok(()));
        w.on_response("n9", Ok(()));
        assert_eq!(w.decision(), None, "one ack counted once");
        w.on_response("n1", Err("late error".into()));
        assert_eq!(w.outcomes()[0], ("n1".to_string(), Outcome::Ok));
        assert_eq!(w.outcomes().len(), 3);
    }

    /// Proves late replies are recorded without changing the decision: after success (straggler)
    /// and after a timeout (reply past the deadline replaces Timeout).
    #[test]
    fn late_replies_recorded_decision_sticky() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        w.on_response("n1", Ok(()));
        w.on_response("n2", Ok(()));
        w.on_response("n3", Err("slow disk".into()));
        assert_eq!(w.decision(), Some(Ok(())));
        assert_eq!(w.outcomes()[2].1, Outcome::Error(Failure::from("slow disk")));

        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        w.on_response("n1", Ok(()));
        w.tick(150);
        let decided = w.decision();
        assert!(matches!(decided, Some(Err(_))));
        w.on_response("n2", Ok(()));
        assert_eq!(w.outcomes()[1].1, Outcome::Ok);
        assert_eq!(w.outcomes()[2].1, Outcome::Timeout);
        assert_eq!(w.decision(), decided, "decision unchanged");
    }

    /// Proves skipping known-down replicas fails the write immediately once the quorum is out of
    /// reach, showing them as "down", and that skip cannot override a reply.
    #[test]
    fn skip_makes_quorum_impossible() {
        let mut w = WriteCoordinator::new(names(&["n1", "n2", "n3", "n4"]), 3, 100);
        w.on_response("n1", Ok(()));
        w.skip("n1");
        assert_eq!(w.outcomes()[0].1, Outcome::Ok, "skip does not override a reply");
        w.skip("n4");
        assert_eq!(w.decision(), None);
        w.skip("n3");
        assert_eq!(
            w.decision().unwrap().unwrap_err().to_string(),
            "quorum not reached: needed 3 acks, got 1 (n2: no reply, n3: down, n4: down)"
        );
        w.on_response("n3", Ok(()));
        assert_eq!(w.outcomes()[2].1, Outcome::Skipped, "not sent, so a reply cannot be ours");
    }

    /// Proves the read error message has exactly the documented shape.
    #[test]
    fn read_error_message() {
        let mut r: ReadCoordinator<Set> = ReadCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        r.on_response("n1", Ok(set(&[1])));
        r.on_response("n3", Err("disk full".into()));
        r.tick(100);
        assert_eq!(
            r.decision().unwrap().unwrap_err().to_string(),
            "quorum not reached: needed 2 replies, got 1 (n2: timeout, n3: error: disk full)"
        );
        assert_eq!(r.merged(), Some(&set(&[1])), "what did arrive is still merged");
    }

    /// Proves a read returns the merge at decision time, keeps merging late replies, and repairs
    /// exactly the replicas whose state does not descend the final merge.
    #[test]
    fn read_merges_and_repairs() {
        let mut r = ReadCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        r.on_response("n1", Ok(set(&[1])));
        r.on_response("n2", Ok(set(&[1, 2])));
        assert_eq!(r.decision(), Some(Ok(set(&[1, 2]))));
        assert!(!r.is_finished());
        r.on_response("n3", Ok(set(&[3])));
        assert!(r.is_finished());
        assert_eq!(r.decision(), Some(Ok(set(&[1, 2]))), "sticky");
        assert_eq!(r.merged(), Some(&set(&[1, 2, 3])));
        let all = set(&[1, 2, 3]);
        assert_eq!(
            r.repairs(),
            vec![("n1".into(), all.clone()), ("n2".into(), all.clone()), ("n3".into(), all)]
        );
    }

    /// Proves a read with a session floor waits past `needed` replies for a merge that meets
    /// the floor, answers as soon as one does, and otherwise fails as `session_behind` once
    /// nothing is pending.
    #[test]
    fn read_with_floor_waits_for_a_reply_that_meets_it() {
        let floor = || Floor::new(|s: &Set| s.0.contains(&7));
        let mut r = ReadCoordinator::new(names(&["n1", "n2", "n3"]), 1, 100).with_floor(floor());
        r.on_response("n1", Ok(set(&[1])));
        assert_eq!(r.decision(), None, "one reply is enough for r=1, but not for the session");
        r.on_response("n2", Ok(set(&[7])));
        assert_eq!(r.decision(), Some(Ok(set(&[1, 7]))));

        let mut r = ReadCoordinator::new(names(&["n1", "n2", "n3"]), 1, 100).with_floor(floor());
        r.on_response("n1", Ok(set(&[1])));
        r.on_timeout("n2");
        assert_eq!(r.decision(), None);
        r.on_response("n3", Ok(set(&[2])));
        let Some(Err(e)) = r.decision() else { panic!("expected a failure, got {:?}", r.decision()) };
        assert!(e.session_behind);
        assert_eq!(e.got, 2);
        assert!(e.to_string().starts_with("session not satisfied"), "{e}");
        assert!(e.to_string().contains("n2: timeout"), "{e}");

        // The deadline ends the wait too.
        let mut r = ReadCoordinator::new(names(&["n1", "n2"]), 1, 100).with_floor(floor());
        r.on_response("n1", Ok(set(&[1])));
        r.tick(100);
        assert!(matches!(r.decision(), Some(Err(QuorumError { session_behind: true, .. }))));
    }

    /// Proves replicas that errored or were skipped are not read-repaired, and a replica already
    /// holding the merge is not repaired either.
    #[test]
    fn read_repairs_only_stale_ok_replicas() {
        let mut r = ReadCoordinator::new(names(&["n1", "n2", "n3", "n4"]), 2, 100);
        r.skip("n4");
        r.on_response("n1", Ok(set(&[1, 2])));
        r.on_response("n2", Err("disk full".into()));
        r.on_response("n3", Ok(set(&[1])));
        assert!(r.is_finished());
        assert_eq!(r.decision(), Some(Ok(set(&[1, 2]))));
        assert_eq!(r.repairs(), vec![("n3".into(), set(&[1, 2]))]);
    }

    /// Proves a read with no OK reply has no merge and no repairs.
    #[test]
    fn read_without_replies_has_nothing_to_repair() {
        let mut r: ReadCoordinator<Set> = ReadCoordinator::new(names(&["n1"]), 1, 10);
        r.tick(10);
        assert!(r.decision().unwrap().is_err());
        assert_eq!(r.merged(), None);
        assert!(r.repairs().is_empty());
    }

    /// Proves constructor preconditions are enforced.
    #[test]
    #[should_panic(expected = "needed must be in 1..=replicas")]
    fn needed_above_replicas_panics() {
        WriteCoordinator::new(names(&["n1"]), 2, 10);
    }

    /// Proves a replica listed twice is refused (its reply would count twice).
    #[test]
    #[should_panic(expected = "duplicate replica")]
    fn duplicate_replica_panics() {
        WriteCoordinator::new(names(&["n1", "n1"]), 1, 10);
    }

    /// Proves the production state type plugs in: a read over `ItemState` replicas holding
    /// concurrent writes answers with both siblings and repairs exactly the replicas lacking one.
    #[test]
    fn read_over_item_states() {
        use crate::causality::{ActorId, ItemState, Value, VersionVector};
        let blind = VersionVector::new();
        let a = ItemState::new().update(&blind, Value::Data(b"a".to_vec()), ActorId(1)).unwrap();
        let b = ItemState::new().update(&blind, Value::Data(b"b".to_vec()), ActorId(2)).unwrap();
        let both = ItemState::merged(&a, &b);
        let mut r = ReadCoordinator::new(names(&["n1", "n2", "n3"]), 2, 100);
        r.on_response("n1", Ok(a));
        r.on_response("n2", Ok(b));
        assert_eq!(r.decision(), Some(Ok(both.clone())));
        assert_eq!(both.siblings().len(), 2, "concurrent writes are both kept");
        r.on_response("n3", Ok(both.clone()));
        let repaired: Vec<String> = r.repairs().into_iter().map(|(name, _)| name).collect();
        assert_eq!(repaired, names(&["n1", "n2"]));
    }

    /// One event fed to a coordinator in the model-based tests below.
    #[derive(Clone, Debug)]
    enum Event {
        Ok(usize, u32),
        Err(usize),
        Skip(usize),
        Tick(u64),
    }

    fn events(replicas: usize) -> impl Strategy<Value = Vec<Event>> {
        let event = prop_oneof![
            (0..replicas + 1, 0u32..4).prop_map(|(r, v)| Event::Ok(r, v)),
            (0..replicas + 1).prop_map(Event::Err),
            (0..replicas + 1).prop_map(Event::Skip),
            (0u64..150).prop_map(Event::Tick),
        ];
        prop::collection::vec(event, 0..20)
    }

    fn scenario() -> impl Strategy<Value = (usize, usize, Vec<Event>)> {
        (1usize..=REPLICATION_FACTOR_MAX).prop_flat_map(|len| (Just(len), 1..=len, events(len)))
    }

    proptest! {
        /// Proves, against a simple model, that a write decides exactly when the outcome counts
        /// make it certain, never changes its decision, and always decides by the deadline.
        #[test]
        fn write_decides_exactly_when_certain((len, needed, events) in scenario()) {
            // Replica index `len` stands for a replica the request was not sent to.
            let replicas: Vec<String> = (0..=len).map(|i| format!("n{i}")).collect();
            let mut w = WriteCoordinator::new(replicas[..len].to_vec(), needed, 100);
            let mut first: Option<Result<(), QuorumError>> = None;
            for event in events {
                match event {
                    Event::Ok(r, _) => w.on_response(&replicas[r], Ok(())),
                    Event::Err(r) => w.on_response(&replicas[r], Err("e".into())),
                    Event::Skip(r) => w.skip(&replicas[r]),
                    Event::Tick(now) => w.tick(now),
                }
                let oks = w.outcomes().iter().filter(|(_, o)| *o == Outcome::Ok).count();
                let pending = w.outcomes().iter().filter(|(_, o)| *o == Outcome::Pending).count();
                match &first {
                    Some(decided) => prop_assert_eq!(&w.decision(), &Some(decided.clone()), "sticky"),
                    None => {
                        let expected = if oks >= needed {
                            Some(true)
                        } else if oks + pending < needed {
                            Some(false)
                        } else {
                            None
                        };
                        prop_assert_eq!(w.decision().map(|d| d.is_ok()), expected);
                        first = w.decision();
                    }
                }
            }
            w.tick(100);
            prop_assert!(w.decision().is_some() && w.is_finished());
        }

        /// Proves, against a model, that a joint write (two overlapping replica sets, as in a
        /// layout transition) succeeds exactly when each set has its own quorum of acks, fails
        /// as soon as one set cannot reach it, and never changes its decision.
        #[test]
        fn joint_write_needs_a_quorum_in_every_set(
            (len, needed, events) in (2usize..=6).prop_flat_map(|len| (Just(len), 1..=2usize, events(len))),
            split in 1usize..5,
        ) {
            let replicas: Vec<String> = (0..=len).map(|i| format!("n{i}")).collect();
            // Set A: the first `len - split'` replicas; set B: the last ones; they overlap.
            let cut = split.min(len - 1);
            let a: Vec<String> = replicas[..len - cut].to_vec();
            let b: Vec<String> = replicas[cut..len].to_vec();
            let (na, nb) = (needed.min(a.len()), needed.min(b.len()));
            let mut w = WriteCoordinator::joint(replicas[..len].to_vec(), vec![(a.clone(), na), (b.clone(), nb)], 100);
            let mut first: Option<Result<(), QuorumError>> = None;
            for event in events {
                match event {
                    Event::Ok(r, _) => w.on_response(&replicas[r], Ok(())),
                    Event::Err(r) => w.on_response(&replicas[r], Err("e".into())),
                    Event::Skip(r) => w.skip(&replicas[r]),
                    Event::Tick(now) => w.tick(now),
                }
                let count = |set: &[String], want: &Outcome| {
                    w.outcomes().iter().filter(|(r, o)| set.contains(r) && o == want).count()
                };
                let ok_in = |set: &[String], n: usize| count(set, &Outcome::Ok) >= n;
                let lost = |set: &[String], n: usize| count(set, &Outcome::Ok) + count(set, &Outcome::Pending) < n;
                match &first {
                    Some(decided) => prop_assert_eq!(&w.decision(), &Some(decided.clone()), "sticky"),
                    None => {
                        let expected = if lost(&a, na) || lost(&b, nb) {
                            Some(false)
                        } else if ok_in(&a, na) && ok_in(&b, nb) {
                            Some(true)
                        } else {
                            None
                        };
                        prop_assert_eq!(w.decision().map(|d| d.is_ok()), expected);
                        first = w.decision();
                    }
                }
            }
            w.tick(100);
            prop_assert!(w.decision().is_some() && w.is_finished());
        }

        /// Proves a read's merge is the union of every accepted OK reply whatever the order,
        /// its successful decision holds at least `needed` replies' worth, and after the
        /// deadline every OK replica either descends the merge or is in the repair list.
        #[test]
        fn read_merge_and_repairs_match_model((len, needed, events) in scenario()) {
            let replicas: Vec<String> = (0..=len).map(|i| format!("n{i}")).collect();
            let mut r = ReadCoordinator::new(replicas[..len].to_vec(), needed, 100);
            let mut accepted: Vec<Option<Set>> = vec![None; len];
            for event in events {
                match event {
                    Event::Ok(i, v) => {
                        let awaited =
                            |(_, o): &(String, Outcome)| matches!(o, Outcome::Pending | Outcome::Timeout);
                        let pending_or_timeout = r.outcomes().get(i).is_some_and(awaited);
                        if pending_or_timeout {
                            accepted[i] = Some(set(&[v, 10 + i as u32]));
                        }
                        r.on_response(&replicas[i], Ok(set(&[v, 10 + i as u32])));
                    }
                    Event::Err(i) => r.on_response(&replicas[i], Err("e".into())),
                    Event::Skip(i) => r.skip(&replicas[i]),
                    Event::Tick(now) => r.tick(now),
                }
            }
            r.tick(100);
            let mut union = Set::default();
            for state in accepted.iter().flatten() {
                union.merge_from(state);
            }
            let any = accepted.iter().any(Option::is_some);
            prop_assert_eq!(r.merged().cloned(), any.then_some(union.clone()));
            if let Some(Ok(decided)) = r.decision() {
                prop_assert!(union.descends(&decided));
            }
            let repaired: Vec<String> = r.repairs().into_iter().map(|(name, state)| {
                assert_eq!(state, union);
                name
            }).collect();
            for (i, state) in accepted.iter().enumerate() {
                if let Some(state) = state {
                    prop_assert_eq!(repaired.contains(&replicas[i]), !state.descends(&union));
                }
            }
        }
    }

    /// Proves "outcome unknown" is a property of the outcome type: only a replica that never
    /// got the request (unreachable) or refused it is known not to have applied it.
    #[test]
    fn outcome_unknown_is_typed() {
        assert!(Outcome::Timeout.outcome_unknown());
        assert!(Outcome::Pending.outcome_unknown());
        assert!(Outcome::Error(Failure::Lost("reset".into())).outcome_unknown());
        assert!(Outcome::Error(Failure::Corrupt("bad frame".into())).outcome_unknown());
        assert!(!Outcome::Error(Failure::Unreachable("refused".into())).outcome_unknown());
        assert!(!Outcome::Error(Failure::from("disk full")).outcome_unknown());
        assert!(!Outcome::Skipped.outcome_unknown());
        assert_eq!(Outcome::Error(Failure::from("disk full")).to_string(), "error: disk full");
    }
}
