//! Layout-transition trackers: which committed layout versions are still live (issue #9).
//!
//! Data moves between layout versions online, Garage-style. While a transition runs, writes go
//! to the replica sets of every *live* version and reads to the newest version whose owners are
//! known to hold all data. Three monotonic per-member trackers, each a layout version, decide
//! which versions those are:
//!
//! ```text
//!   ack[m]       m applied the version, and every write it coordinates from now on goes to the
//!                replica sets of all live versions up to it (reported once its in-flight
//!                writes started under older layouts have finished);
//!   sync[m]      m finished streaming its local data to that version's owners; may reach v only
//!                once min(ack) >= v (streaming starts after everyone writes to v);
//!   sync_ack[m]  m applied a state where min(sync) >= v, so m now reads from v; may reach v only
//!                once min(sync) >= v.
//!
//!   per member: ack >= sync >= sync_ack          read version = min(sync)
//!   live versions = those >= min(sync_ack)       the newest version is always live
//! ```
//!
//! Tracked members are those of every live version; when `min(sync_ack)` passes a version,
//! members found only in retired versions stop being tracked. Everything here is pure: the
//! metadata state machine ([`crate::state::Metadata`]) holds a [`LayoutTrackers`] and applies
//! `Command::LayoutProgress` through [`LayoutTrackers::report`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::state::Layout;

/// Which of a member's three trackers a progress report moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tracker {
    /// The member writes to every live version up to this one.
    Ack,
    /// The member streamed its data to this version's owners.
    Sync,
    /// The member reads from this version.
    SyncAck,
}

impl Tracker {
    /// All three, in the order a member reports them for one version.
    pub const ALL: [Tracker; 3] = [Tracker::Ack, Tracker::Sync, Tracker::SyncAck];

    /// The name answers and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Tracker::Ack => "ack",
            Tracker::Sync => "sync",
            Tracker::SyncAck => "sync_ack",
        }
    }

    /// The tracker whose cluster-wide minimum must reach a version before this one may.
    pub fn needs(self) -> Option<Tracker> {
        match self {
            Tracker::Ack => None,
            Tracker::Sync => Some(Tracker::Ack),
            Tracker::SyncAck => Some(Tracker::Sync),
        }
    }
}

impl fmt::Display for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tracked member's three trackers (layout versions). Always `ack >= sync >= sync_ack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    pub ack: u64,
    pub sync: u64,
    pub sync_ack: u64,
}

impl MemberProgress {
    /// All three at `version`.
    pub fn at(version: u64) -> Self {
        MemberProgress { ack: version, sync: version, sync_ack: version }
    }

    pub fn get(&self, tracker: Tracker) -> u64 {
        match tracker {
            Tracker::Ack => self.ack,
            Tracker::Sync => self.sync,
            Tracker::SyncAck => self.sync_ack,
        }
    }

    fn get_mut(&mut self, tracker: Tracker) -> &mut u64 {
        match tracker {
            Tracker::Ack => &mut self.ack,
            Tracker::Sync => &mut self.sync,
            Tracker::SyncAck => &mut self.sync_ack,
        }
    }
}

/// Most member names an error message lists (the rest are counted).
const NAMES_SHOWN_MAX: usize = 8;

fn names(list: &[String]) -> String {
    let mut s = list.iter().take(NAMES_SHOWN_MAX).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > NAMES_SHOWN_MAX {
        s.push_str(&format!(" and {} more", list.len() - NAMES_SHOWN_MAX));
    }
    s
}

fn waiting_list(list: &[(String, Tracker)]) -> String {
    let shown: Vec<String> = list.iter().map(|(m, t)| format!("{m} ({t})")).collect();
    names(&shown)
}

/// Why a progress report or a commit was refused by the transition rules. Each says what was
/// needed and what was found; a refused report is logged by the driver and retried later.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum LayoutError {
    #[error("member {member:?} is not tracked: it is in none of the live layout versions v{live_from} to v{current}")]
    NotTracked { member: String, live_from: u64, current: u64 },
    #[error(
        "{member:?} reported {tracker} for layout v{version}, but the newest committed layout is v{current}"
    )]
    AheadOfLayout { member: String, tracker: Tracker, version: u64, current: u64 },
    #[error("{member:?} cannot report {tracker} v{version} yet: that needs every tracked member's {needs} at v{version} or later, but the lowest is v{lowest} ({})", names(.behind))]
    TooEarly {
        member: String,
        tracker: Tracker,
        version: u64,
        needs: Tracker,
        lowest: u64,
        /// The members whose `needs` tracker is below `version`.
        behind: Vec<String>,
    },
    #[error("layout v{version} is still being synced (live versions v{live_from} to v{version}); wait for the transition to finish: waiting for {}", waiting_list(.waiting))]
    TransitionInProgress {
        version: u64,
        live_from: u64,
        /// Each member that has not reported `sync_ack` for `version`, with the first tracker
        /// it has not reported for it.
        waiting: Vec<(String, Tracker)>,
    },
    #[error("layout v{version} is still being synced; wait for the transition to finish (the history keeps at most {max} versions and never drops a live one)")]
    HistoryFull { version: u64, max: usize },
}

/// The three trackers of every tracked member (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutTrackers {
    members: BTreeMap<String, MemberProgress>,
}

impl LayoutTrackers {
    /// The founding members, all three trackers at `version`.
    pub fn founded<'a>(members: impl IntoIterator<Item = &'a str>, version: u64) -> Self {
        LayoutTrackers {
            members: members.into_iter().map(|m| (m.to_owned(), MemberProgress::at(version))).collect(),
        }
    }

    /// Every tracked member's trackers.
    pub fn members(&self) -> &BTreeMap<String, MemberProgress> {
        &self.members
    }

    pub fn get(&self, member: &str) -> Option<MemberProgress> {
        self.members.get(member).copied()
    }

    /// The lowest value of `tracker` over tracked members; `None` if none is tracked.
    pub fn min(&self, tracker: Tracker) -> Option<u64> {
        self.members.values().map(|p| p.get(tracker)).min()
    }

    /// Starts tracking the members of a just-committed layout `version + 1` that are not
    /// tracked yet, all three trackers at `version`: they hold no data of older versions, so
    /// they must not hold those back, and they still report `version + 1` themselves.
    pub fn track_joined<'a>(&mut self, members: impl IntoIterator<Item = &'a str>, version: u64) {
        for m in members {
            self.members.entry(m.to_owned()).or_insert(MemberProgress::at(version));
        }
    }

    /// The members with `tracker` below `version`.
    pub fn behind(&self, tracker: Tracker, version: u64) -> Vec<String> {
        self.members.iter().filter(|(_, p)| p.get(tracker) < version).map(|(m, _)| m.clone()).collect()
    }

    /// Each member that has not reported `sync_ack` for `version`, with the first tracker it
    /// has not reported for it.
    pub fn waiting(&self, version: u64) -> Vec<(String, Tracker)> {
        self.members
            .iter()
            .filter_map(|(m, p)| {
                Tracker::ALL.into_iter().find(|t| p.get(*t) < version).map(|t| (m.clone(), t))
            })
            .collect()
    }

    /// Applies a progress report: `member`'s `tracker` becomes `max(value, version)`. Returns
    /// the value after it and whether it moved. `current` is the newest committed version and
    /// `live_from` the oldest live one (only used in errors). A report at or below the value
    /// is a no-op (retries are harmless); `sync` needs `min(ack) >= version` and `sync_ack`
    /// needs `min(sync) >= version`, otherwise the report is early and refused.
    pub fn report(
        &mut self,
        member: &str,
        tracker: Tracker,
        version: u64,
        current: u64,
        live_from: u64,
    ) -> Result<(u64, bool), LayoutError> {
        let Some(progress) = self.members.get(member).copied() else {
            return Err(LayoutError::NotTracked { member: member.to_owned(), live_from, current });
        };
        if version > current {
            return Err(LayoutError::AheadOfLayout { member: member.to_owned(), tracker, version, current });
        }
        let value = progress.get(tracker);
        if version <= value {
            return Ok((value, false));
        }
        if let Some(needs) = tracker.needs() {
            let lowest = self.min(needs).unwrap_or(0);
            if lowest < version {
                return Err(LayoutError::TooEarly {
                    member: member.to_owned(),
                    tracker,
                    version,
                    needs,
                    lowest,
                    behind: self.behind(needs, version),
                });
            }
        }
        if let Some(p) = self.members.get_mut(member) {
            *p.get_mut(tracker) = version;
        }
        Ok((version, true))
    }

    /// Stops tracking the members found in none of `live` (the live layouts); returns them.
    pub fn retire(&mut self, live: &[Layout]) -> Vec<String> {
        let keep: BTreeSet<&str> = live.iter().flat_map(|l| l.members.keys().map(String::as_str)).collect();
        let gone: Vec<String> = self.members.keys().filter(|m| !keep.contains(m.as_str())).cloned().collect();
        for m in &gone {
            self.members.remove(m);
        }
        gone
    }
}

/// The layouts of `layouts` (sorted by version, oldest first) with version >= `live_from`.
pub fn live_suffix(layouts: &[Layout], live_from: u64) -> &[Layout] {
    let first = layouts.partition_point(|l| l.version < live_from);
    &layouts[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Change, Command, MemberSpec, MetaError, Metadata, Outcome};

    fn member(id: &str, zone: &str) -> MemberSpec {
        MemberSpec {
            id: id.into(),
            zone: zone.into(),
            peer_address: format!("127.0.0.1:1{id}"),
            http_address: format!("127.0.0.1:2{id}"),
        }
    }

    /// Members 1@a 2@b 3@c 4@a, two replicas per table: any one of them may leave.
    fn four() -> Metadata {
        let mut m = Metadata::new();
        let members = vec![member("1", "a"), member("2", "b"), member("3", "c"), member("4", "a")];
        m.apply(&Command::Bootstrap { members, default_replicas: 2, tables: vec![] }).unwrap();
        m
    }

    fn commit(m: &mut Metadata, change: Change) {
        let v = m.layout().unwrap().version;
        m.apply(&Command::Stage(change)).unwrap();
        assert_eq!(
            m.apply(&Command::Commit { expected_version: v }),
            Ok(Outcome::Committed { version: v + 1 })
        );
    }

    fn report(m: &mut Metadata, member: &str, tracker: Tracker, version: u64) -> Result<Outcome, MetaError> {
        m.apply(&Command::LayoutProgress { member: member.into(), tracker, version })
    }

    fn all(m: &mut Metadata, tracker: Tracker, version: u64) {
        let members: Vec<String> = m.trackers().members().keys().cloned().collect();
        for member in members {
            report(m, &member, tracker, version).unwrap();
        }
    }

    fn live_versions(m: &Metadata) -> Vec<u64> {
        m.live_layouts().iter().map(|l| l.version).collect()
    }

    /// Before bootstrap nothing is tracked or live and reports are refused; bootstrap tracks
    /// the founders at version 1 with only version 1 live.
    #[test]
    fn bootstrap_tracks_founders_at_version_1() {
        let mut m = Metadata::new();
        assert_eq!((m.min_ack(), m.min_sync(), m.min_sync_ack(), m.read_version()), (0, 0, 0, 0));
        assert!(m.live_layouts().is_empty() && m.transition_done());
        assert_eq!(report(&mut m, "1", Tracker::Ack, 1), Err(MetaError::NotBootstrapped));
        let m = four();
        assert_eq!(m.trackers().members().len(), 4);
        assert!(m.trackers().members().values().all(|p| *p == MemberProgress::at(1)));
        assert_eq!((m.min_ack(), m.min_sync(), m.min_sync_ack(), m.read_version()), (1, 1, 1, 1));
        assert_eq!(live_versions(&m), vec![1]);
        assert!(m.transition_done());
    }

    /// A commit starts a transition: both versions live, reads stay on the old one, the
    /// joiner is tracked from the old version and the others keep their values.
    #[test]
    fn commit_starts_a_transition_and_joiners_start_at_the_old_version() {
        let mut m = four();
        commit(&mut m, Change::Join(member("5", "b")));
        assert_eq!(m.progress("5"), Some(MemberProgress::at(1)));
        assert_eq!(m.trackers().members().len(), 5);
        assert_eq!(live_versions(&m), vec![1, 2]);
        assert_eq!(m.read_version(), 1);
        assert!(!m.transition_done());
        // The next transition: the joiner of version 3 starts at 2, not 1.
        all(&mut m, Tracker::Ack, 2);
        all(&mut m, Tracker::Sync, 2);
        all(&mut m, Tracker::SyncAck, 2);
        commit(&mut m, Change::Join(member("6", "c")));
        assert_eq!(m.progress("6"), Some(MemberProgress::at(2)));
        assert_eq!(m.progress("1"), Some(MemberProgress::at(2)));
    }

    /// A transition walks ack → sync → sync_ack: sync waits for every ack, sync_ack for every
    /// sync, the read version moves when the last sync arrives and the old version retires
    /// when the last sync_ack does.
    #[test]
    fn a_transition_walks_ack_then_sync_then_sync_ack() {
        let mut m = four();
        commit(&mut m, Change::Join(member("5", "b")));
        report(&mut m, "1", Tracker::Ack, 2).unwrap();
        let early = report(&mut m, "1", Tracker::Sync, 2);
        let Err(MetaError::Layout(LayoutError::TooEarly { needs, lowest, behind, .. })) = early else {
            panic!("sync before every ack must be refused: {early:?}")
        };
        assert_eq!((needs, lowest), (Tracker::Ack, 1));
        assert_eq!(behind, vec!["2", "3", "4", "5"]);
        all(&mut m, Tracker::Ack, 2);
        assert_eq!(m.min_ack(), 2);
        assert!(matches!(
            report(&mut m, "1", Tracker::SyncAck, 2),
            Err(MetaError::Layout(LayoutError::TooEarly { needs: Tracker::Sync, .. }))
        ));
        for id in ["1", "2", "3", "4"] {
            report(&mut m, id, Tracker::Sync, 2).unwrap();
            assert_eq!(m.read_version(), 1, "reads move only once every member synced");
        }
        report(&mut m, "5", Tracker::Sync, 2).unwrap();
        assert_eq!(m.read_version(), 2);
        assert_eq!(live_versions(&m), vec![1, 2]);
        for id in ["1", "2", "3", "4"] {
            report(&mut m, id, Tracker::SyncAck, 2).unwrap();
        }
        assert_eq!(live_versions(&m), vec![1, 2]);
        assert_eq!(
            report(&mut m, "5", Tracker::SyncAck, 2),
            Ok(Outcome::Progressed { value: 2, retired: vec![] })
        );
        assert_eq!(live_versions(&m), vec![2]);
        assert!(m.transition_done());
        assert_eq!(m.layouts().len(), 2, "a retired version stays in the history");
    }

    /// A member that left stays tracked (it must stream its data away) until the version it
    /// was in retires; then it is dropped and its reports are refused.
    #[test]
    fn a_leaver_is_tracked_until_its_last_version_retires() {
        let mut m = four();
        commit(&mut m, Change::Leave { id: "4".into() });
        assert!(m.progress("4").is_some());
        all(&mut m, Tracker::Ack, 2);
        all(&mut m, Tracker::Sync, 2);
        for id in ["1", "2", "3"] {
            report(&mut m, id, Tracker::SyncAck, 2).unwrap();
        }
        assert_eq!(
            report(&mut m, "4", Tracker::SyncAck, 2),
            Ok(Outcome::Progressed { value: 2, retired: vec!["4".into()] })
        );
        assert_eq!(m.progress("4"), None);
        assert_eq!(m.trackers().members().len(), 3);
        assert_eq!(
            report(&mut m, "4", Tracker::Ack, 2),
            Err(MetaError::Layout(LayoutError::NotTracked { member: "4".into(), live_from: 2, current: 2 }))
        );
    }

    /// Refused reports (untracked member, version past the layout) change nothing; a report
    /// at or below the value is an accepted no-op.
    #[test]
    fn bad_reports_are_refused_and_retries_are_no_ops() {
        let mut m = four();
        commit(&mut m, Change::Join(member("5", "b")));
        let before = m.clone();
        assert_eq!(
            report(&mut m, "9", Tracker::Ack, 2),
            Err(MetaError::Layout(LayoutError::NotTracked { member: "9".into(), live_from: 1, current: 2 }))
        );
        assert_eq!(
            report(&mut m, "1", Tracker::Ack, 3),
            Err(MetaError::Layout(LayoutError::AheadOfLayout {
                member: "1".into(),
                tracker: Tracker::Ack,
                version: 3,
                current: 2
            }))
        );
        for tracker in Tracker::ALL {
            for version in [0, 1] {
                assert_eq!(
                    report(&mut m, "1", tracker, version),
                    Ok(Outcome::Progressed { value: 1, retired: vec![] })
                );
            }
        }
        assert_eq!(m, before);
        report(&mut m, "1", Tracker::Ack, 2).unwrap();
        let after = m.clone();
        assert_eq!(
            report(&mut m, "1", Tracker::Ack, 2),
            Ok(Outcome::Progressed { value: 2, retired: vec![] })
        );
        assert_eq!(
            report(&mut m, "1", Tracker::Ack, 1),
            Ok(Outcome::Progressed { value: 2, retired: vec![] })
        );
        assert_eq!(m, after);
    }

    /// A commit during a transition is refused, naming the unfinished version and who has not
    /// reported what; once the transition finishes the same commit goes through.
    #[test]
    fn commit_waits_for_the_transition_to_finish() {
        let mut m = four();
        commit(&mut m, Change::Join(member("5", "b")));
        m.apply(&Command::Stage(Change::Join(member("6", "c")))).unwrap();
        all(&mut m, Tracker::Ack, 2);
        report(&mut m, "1", Tracker::Sync, 2).unwrap();
        let before = m.clone();
        let refused = m.apply(&Command::Commit { expected_version: 2 });
        let expected = LayoutError::TransitionInProgress {
            version: 2,
            live_from: 1,
            waiting: vec![
                ("1".into(), Tracker::SyncAck),
                ("2".into(), Tracker::Sync),
                ("3".into(), Tracker::Sync),
                ("4".into(), Tracker::Sync),
                ("5".into(), Tracker::Sync),
            ],
        };
        assert_eq!(refused, Err(MetaError::Layout(expected)));
        assert!(refused.unwrap_err().to_string().starts_with("layout v2 is still being synced"));
        assert_eq!(m, before);
        all(&mut m, Tracker::Sync, 2);
        all(&mut m, Tracker::SyncAck, 2);
        assert_eq!(m.apply(&Command::Commit { expected_version: 2 }), Ok(Outcome::Committed { version: 3 }));
    }

    /// The trackers are part of the canonical encoding, so snapshots restore a transition.
    #[test]
    fn trackers_round_trip_through_the_encoding() {
        let mut m = four();
        commit(&mut m, Change::Join(member("5", "b")));
        all(&mut m, Tracker::Ack, 2);
        let back = Metadata::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.min_ack(), 2);
        assert_eq!(back.live_layouts().len(), 2);
    }

    /// What the proptest applies: abstract steps turned into commands against the state.
    #[derive(Clone, Debug)]
    enum Step {
        Join(u8),
        Leave(u8),
        Commit {
            stale: bool,
        },
        Unstage,
        /// A tracked member (by index) reports `tracker` for the current version minus `back`.
        Report {
            member: u8,
            tracker: Tracker,
            back: u8,
        },
        /// A tracked member (by index) reports the first tracker it has not reported for the
        /// current version (what a driver does; refused while others lag).
        Next {
            member: u8,
        },
        /// A report by an arbitrary pool member, possibly untracked, possibly ahead.
        Stray {
            member: u8,
            tracker: Tracker,
            ahead: bool,
        },
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let tracker = prop_oneof![Just(Tracker::Ack), Just(Tracker::Sync), Just(Tracker::SyncAck)];
        let step = prop_oneof![
            2 => (0u8..10).prop_map(Step::Join),
            1 => (0u8..10).prop_map(Step::Leave),
            2 => any::<bool>().prop_map(|stale| Step::Commit { stale }),
            1 => Just(Step::Unstage),
            12 => (any::<u8>(), tracker.clone(), prop_oneof![4 => Just(0u8), 1 => Just(1u8)])
                .prop_map(|(member, tracker, back)| Step::Report { member, tracker, back }),
            10 => any::<u8>().prop_map(|member| Step::Next { member }),
            1 => (0u8..10, tracker, any::<bool>()).prop_map(|(member, tracker, ahead)| Step::Stray { member, tracker, ahead }),
        ];
        proptest::collection::vec(step, 1..300)
    }

    fn pool(i: u8) -> MemberSpec {
        member(&format!("p{i}"), ["a", "b", "c"][usize::from(i % 3)])
    }

    fn command(m: &Metadata, step: &Step) -> Command {
        let current = m.layout().map_or(0, |l| l.version);
        match step {
            Step::Join(i) => Command::Stage(Change::Join(pool(*i))),
            Step::Leave(i) => Command::Stage(Change::Leave { id: format!("p{i}") }),
            Step::Commit { stale } => Command::Commit { expected_version: current - u64::from(*stale) },
            Step::Unstage => Command::Unstage,
            Step::Report { member, tracker, back } => {
                let tracked: Vec<&String> = m.trackers().members().keys().collect();
                let member = tracked[usize::from(*member) % tracked.len()].clone();
                Command::LayoutProgress {
                    member,
                    tracker: *tracker,
                    version: current.saturating_sub(u64::from(*back)),
                }
            }
            Step::Next { member } => {
                let tracked: Vec<(&String, &MemberProgress)> = m.trackers().members().iter().collect();
                let (member, p) = tracked[usize::from(*member) % tracked.len()];
                let tracker =
                    Tracker::ALL.into_iter().find(|t| p.get(*t) < current).unwrap_or(Tracker::SyncAck);
                Command::LayoutProgress { member: member.clone(), tracker, version: current }
            }
            Step::Stray { member, tracker, ahead } => Command::LayoutProgress {
                member: format!("p{member}"),
                tracker: *tracker,
                version: current + u64::from(*ahead),
            },
        }
    }

    proptest::proptest! {
        /// Over any sequence of commits and progress reports: the live versions are a non-empty
        /// suffix of the history ending at the newest layout, at most two long; the read version
        /// is live; trackers only grow, keep ack >= sync >= sync_ack <= current per member, and
        /// track exactly the members of the live versions; a refused command changes nothing.
        #[test]
        fn transitions_keep_their_invariants(steps in steps()) {
            use proptest::{prop_assert, prop_assert_eq};
            let mut m = Metadata::new();
            let founders = vec![pool(0), pool(1), pool(2), pool(3)];
            m.apply(&Command::Bootstrap { members: founders, default_replicas: 2, tables: vec![] }).unwrap();
            for step in &steps {
                let before = m.clone();
                let c = command(&m, step);
                let r = m.apply(&c);
                if r.is_err() {
                    prop_assert_eq!(&m, &before, "refused {:?} changed the state", c);
                }
                let current = m.layout().unwrap().version;
                let live = m.live_layouts();
                prop_assert!(!live.is_empty());
                prop_assert!(live.len() <= 2, "stacked transitions: {}", live.len());
                prop_assert_eq!(live.last().unwrap().version, current);
                prop_assert!(live.iter().all(|l| l.version >= m.min_sync_ack()));
                prop_assert_eq!(live[0].version, m.min_sync_ack(), "the oldest live version is in the history");
                prop_assert!((m.min_sync_ack()..=current).contains(&m.read_version()));
                prop_assert!(m.min_ack() >= before.min_ack() && m.min_sync() >= before.min_sync());
                prop_assert!(m.min_sync_ack() >= before.min_sync_ack());
                prop_assert!(m.layouts().len() <= crate::state::LAYOUT_HISTORY_LEN_MAX);
                let live_members: BTreeSet<&String> = live.iter().flat_map(|l| l.members.keys()).collect();
                let tracked: BTreeSet<&String> = m.trackers().members().keys().collect();
                prop_assert_eq!(tracked, live_members);
                for (id, p) in m.trackers().members() {
                    prop_assert!(p.ack >= p.sync && p.sync >= p.sync_ack && p.ack <= current, "{}: {:?}", id, p);
                    if let Some(old) = before.progress(id) {
                        for t in Tracker::ALL {
                            prop_assert!(p.get(t) >= old.get(t), "{} {} went back: {:?} -> {:?}", id, t, old, p);
                        }
                    }
                }
                if m.transition_done() {
                    prop_assert_eq!(m.read_version(), current);
                }
            }
        }
    }

    /// The error messages name what was needed and what was found, and long lists are cut.
    #[test]
    fn errors_say_what_was_needed_and_found() {
        let behind: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let e = LayoutError::TooEarly {
            member: "n1".into(),
            tracker: Tracker::Sync,
            version: 3,
            needs: Tracker::Ack,
            lowest: 2,
            behind,
        };
        let s = e.to_string();
        assert!(s.contains("every tracked member's ack at v3"), "{s}");
        assert!(s.contains("the lowest is v2"), "{s}");
        assert!(s.contains("n7 and 2 more"), "{s}");
        let e = LayoutError::TransitionInProgress {
            version: 4,
            live_from: 3,
            waiting: vec![("n2".into(), Tracker::Sync)],
        };
        assert_eq!(
            e.to_string(),
            "layout v4 is still being synced (live versions v3 to v4); wait for the transition to finish: waiting for n2 (sync)"
        );
    }

    /// Waiting lists each member with the first tracker it has not reported for the version.
    #[test]
    fn waiting_names_the_first_missing_tracker() {
        let mut t = LayoutTrackers::founded(["a", "b", "c"], 1);
        t.report("a", Tracker::Ack, 2, 2, 1).unwrap();
        t.report("b", Tracker::Ack, 2, 2, 1).unwrap();
        t.report("c", Tracker::Ack, 2, 2, 1).unwrap();
        t.report("a", Tracker::Sync, 2, 2, 1).unwrap();
        assert_eq!(
            t.waiting(2),
            vec![("a".into(), Tracker::SyncAck), ("b".into(), Tracker::Sync), ("c".into(), Tracker::Sync)]
        );
    }
}
