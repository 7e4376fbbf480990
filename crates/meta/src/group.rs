//! Consumer groups as part of the metadata state: each group's generation, members and
//! assignment, and its committed offsets.
//!
//! The Kafka classic group protocol has a *coordinator* that runs the join/sync dance in
//! memory (`coordinator.rs`). What must survive the coordinator — the generation that fences
//! stale members, who the members are, what each was assigned, and every committed offset — is
//! kept here and changes only by committed commands:
//!
//! - [`GroupCommand::Generation`] ends a rebalance: a compare-and-set from the generation the
//!   coordinator started from to the next one, so two nodes that both believe they coordinate
//!   a group cannot both hand out the same generation (the loser's command is refused);
//! - [`GroupCommand::Assign`] records the leader's assignment for that generation;
//! - [`GroupCommand::CommitOffsets`] stores offsets, **fenced by generation and member** in
//!   the state machine itself: a commit from a member of an older generation is refused with
//!   [`GroupError::IllegalGeneration`] however it reached the log.
//!
//! Committed offsets are Kafka's: the offset of the *next* record to read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::log::LogState;

/// Most groups the cluster keeps (with members or only committed offsets).
pub const GROUPS_LEN_MAX: usize = 4096;
/// Most members one group has. A generation command lists them all, so this times a
/// member's largest entry must fit one Raft command.
pub const GROUP_MEMBERS_LEN_MAX: usize = 100;
/// Most partitions one group has offsets for.
pub const GROUP_OFFSETS_LEN_MAX: usize = 16_384;
/// Most offsets one commit command carries; drivers split bigger OffsetCommit requests (Kafka
/// commits are per partition anyway, with an error code each).
pub const OFFSETS_PER_COMMIT_MAX: usize = 1024;
/// Group ids.
pub const GROUP_NAME_BYTES_MAX: usize = 255;
/// Member ids, instance ids, client ids and client hosts (Kafka's member ids are the client
/// id and a UUID, about 60 bytes).
pub const MEMBER_TEXT_BYTES_MAX: usize = 128;
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// The whole assignment of one generation (all members' bytes together). It travels in one
/// Raft command, which must stay under the command limit with room for the ids.
pub const GROUP_ASSIGNMENT_BYTES_MAX: usize = 32 * 1024;
/// Protocol type and protocol names (`consumer`, `range`, `cooperative-sticky`, ...).
pub const PROTOCOL_NAME_BYTES_MAX: usize = 64;

/// Encoded bytes of one member in a generation command, at most: four texts with their length
/// prefixes, two timeouts, an option tag and an empty assignment.
const MEMBER_ENCODED_BYTES_MAX: usize = 4 * (MEMBER_TEXT_BYTES_MAX + 2) + 16;
const _: () = assert!(
    GROUP_NAME_BYTES_MAX + 3 * PROTOCOL_NAME_BYTES_MAX + GROUP_MEMBERS_LEN_MAX * MEMBER_ENCODED_BYTES_MAX
        < crate::node::COMMAND_BYTES_MAX,
    "the largest generation fits one command"
);
const _: () = assert!(
    GROUP_NAME_BYTES_MAX + GROUP_ASSIGNMENT_BYTES_MAX + GROUP_MEMBERS_LEN_MAX * (MEMBER_TEXT_BYTES_MAX + 8)
        < crate::node::COMMAND_BYTES_MAX,
    "the largest assignment fits one command"
);
const _: () = assert!(
    8 * (crate::log::TOPIC_NAME_BYTES_MAX + OFFSET_METADATA_BYTES_MAX + 32) < crate::node::COMMAND_BYTES_MAX,
    "a driver packing offsets by size always fits several of the largest into one command"
);

/// One member of a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub id: String,
    /// A static member's `group.instance.id`.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// What the leader assigned it (empty until [`GroupCommand::Assign`]).
    pub assignment: Vec<u8>,
}

/// A committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// The leader epoch the consumer saw (-1: none).
    pub leader_epoch: i32,
    pub metadata: String,
    /// The coordinator's clock at the commit (Unix ms).
    pub commit_ms: i64,
}

/// One group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// 0 before the first rebalance; bumped by every [`GroupCommand::Generation`].
    pub generation: i32,
    /// `consumer` for Kafka consumers; empty for a group that only holds offsets.
    pub protocol_type: String,
    /// The chosen assignor (`range`, `roundrobin`, ...).
    pub protocol: String,
    pub leader: String,
    pub members: BTreeMap<String, GroupMember>,
    /// Whether the leader's assignment for this generation is recorded.
    pub assigned: bool,
    pub offsets: BTreeMap<(String, u32), CommittedOffset>,
}

/// One offset to commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetSpec {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A change to one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Ends a rebalance: generation `expected + 1` with these members (their assignments
    /// empty). No members: the group is empty (Kafka bumps the generation then too).
    Generation {
        group: String,
        expected: i32,
        protocol_type: String,
        protocol: String,
        leader: String,
        members: Vec<GroupMember>,
    },
    /// The leader's assignment for `generation`.
    Assign { group: String, generation: i32, assignments: Vec<(String, Vec<u8>)> },
    /// Offsets from `member` of `generation`. Generation -1 with an empty member id is a
    /// *simple* consumer (`assign()` without joining), allowed only while the group has no
    /// members, as in Kafka.
    CommitOffsets { group: String, generation: i32, member: String, offsets: Vec<OffsetSpec>, commit_ms: i64 },
    /// Removes empty groups and their offsets (`DeleteGroups`).
    Delete { groups: Vec<String> },
}

impl GroupCommand {
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupCommand::Generation { group, .. }
            | GroupCommand::Assign { group, .. }
            | GroupCommand::CommitOffsets { group, .. } => Some(group),
            GroupCommand::Delete { .. } => None,
        }
    }
}

/// Why one offset of a commit was not stored (the others may have been).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OffsetRefusal {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("offset metadata is {bytes} bytes, at most {OFFSET_METADATA_BYTES_MAX}")]
    MetadataTooLarge { bytes: usize },
    #[error("offset {offset} is invalid: must be 0 or more")]
    InvalidOffset { offset: i64 },
}

/// What a group command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOutcome {
    Generation {
        generation: i32,
    },
    Assigned,
    Committed {
        results: Vec<Result<(), OffsetRefusal>>,
    },
    /// Per group: deleted, or why not.
    Deleted {
        results: Vec<Result<(), GroupError>>,
    },
}

/// Why a group command was refused as a whole. Deterministic in the state: every node refuses
/// alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GroupError {
    #[error("group {group:?} is at generation {current}, not {expected}: another coordinator moved it")]
    StaleGeneration { group: String, expected: i32, current: i32 },
    #[error("generation {got} of group {group:?} is not the current one ({current})")]
    IllegalGeneration { group: String, got: i32, current: i32 },
    #[error("generation {generation} of group {group:?} has no assignment yet: a rebalance is in progress")]
    RebalanceInProgress { group: String, generation: i32 },
    #[error("member {member:?} is not in the current generation of group {group:?}")]
    UnknownMember { group: String, member: String },
    #[error("group {group:?} does not exist")]
    UnknownGroup { group: String },
    #[error("group {group:?} has members; only an empty group can be deleted")]
    NotEmpty { group: String },
    #[error("{what} is invalid: {why}")]
    Invalid { what: String, why: String },
    #[error("a limit is reached: {what} (at most {max})")]
    Limit { what: String, max: usize },
}

/// Every group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsState {
    groups: BTreeMap<String, Group>,
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), GroupError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(GroupError::Invalid {
            what: format!("{what} {:?}", s.chars().take(64).collect::<String>()),
            why: format!("must be at most {max} bytes without control characters"),
        });
    }
    Ok(())
}

/// Group ids: what Kafka accepts (any non-empty string), bounded and printable.
pub fn check_group_name(name: &str) -> Result<(), GroupError> {
    if name.is_empty() {
        return Err(GroupError::Invalid {
            what: "the group id \"\"".into(),
            why: "must not be empty".into(),
        });
    }
    check_text("the group id", name, GROUP_NAME_BYTES_MAX)
}

impl GroupsState {
    pub fn groups(&self) -> &BTreeMap<String, Group> {
        &self.groups
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Applies one committed group command. `log` answers which partitions exist.
    pub fn apply(&mut self, log: &LogState, command: &GroupCommand) -> Result<GroupOutcome, GroupError> {
        match command {
            GroupCommand::Generation { group, expected, protocol_type, protocol, leader, members } => {
                self.generation(group, *expected, protocol_type, protocol, leader, members)
            }
            GroupCommand::Assign { group, generation, assignments } => {
                self.assign(group, *generation, assignments)
            }
            GroupCommand::CommitOffsets { group, generation, member, offsets, commit_ms } => {
                self.commit(log, group, *generation, member, offsets, *commit_ms)
            }
            GroupCommand::Delete { groups } => {
                Ok(GroupOutcome::Deleted { results: groups.iter().map(|g| self.delete(g)).collect() })
            }
        }
    }

    fn generation(
        &mut self,
        name: &str,
        expected: i32,
        protocol_type: &str,
        protocol: &str,
        leader: &str,
        members: &[GroupMember],
    ) -> Result<GroupOutcome, GroupError> {
        check_group_name(name)?;
        check_text("the protocol type", protocol_type, PROTOCOL_NAME_BYTES_MAX)?;
        check_text("the protocol", protocol, PROTOCOL_NAME_BYTES_MAX)?;
        if members.len() > GROUP_MEMBERS_LEN_MAX {
            return Err(GroupError::Limit {
                what: format!("members of group {name:?}"),
                max: GROUP_MEMBERS_LEN_MAX,
            });
        }
        let mut by_id = BTreeMap::new();
        for m in members {
            if m.id.is_empty() {
                return Err(GroupError::Invalid {
                    what: "a member id".into(),
                    why: "must not be empty".into(),
                });
            }
            for (what, s) in [
                ("a member id", m.id.as_str()),
                ("a client id", &m.client_id),
                ("a client host", &m.client_host),
            ] {
                check_text(what, s, MEMBER_TEXT_BYTES_MAX)?;
            }
            if let Some(i) = &m.instance_id {
                check_text("a group instance id", i, MEMBER_TEXT_BYTES_MAX)?;
            }
            let mut m = m.clone();
            m.assignment.clear();
            if by_id.insert(m.id.clone(), m).is_some() {
                return Err(GroupError::Invalid {
                    what: format!("member {:?}", by_id.len()),
                    why: "listed twice".into(),
                });
            }
        }
        if !members.is_empty() && !by_id.contains_key(leader) {
            return Err(GroupError::Invalid {
                what: format!("leader {leader:?}"),
                why: "is not a member".into(),
            });
        }
        let current = self.groups.get(name).map_or(0, |g| g.generation);
        if current != expected {
            return Err(GroupError::StaleGeneration { group: name.to_string(), expected, current });
        }
        if !self.groups.contains_key(name) && self.groups.len() >= GROUPS_LEN_MAX {
            return Err(GroupError::Limit { what: "groups".into(), max: GROUPS_LEN_MAX });
        }
        let generation = expected.checked_add(1).ok_or_else(|| GroupError::Invalid {
            what: format!("generation {expected} of group {name:?}"),
            why: "cannot grow further".into(),
        })?;
        let g = self.groups.entry(name.to_string()).or_default();
        g.generation = generation;
        let empty = by_id.is_empty();
        g.members = by_id;
        g.assigned = false;
        if empty {
            // An empty group keeps its protocol type (so a consumer group stays one) but no
            // leader or assignor: the next rebalance chooses them afresh.
            g.protocol.clear();
            g.leader.clear();
        } else {
            g.protocol_type = protocol_type.to_string();
            g.protocol = protocol.to_string();
            g.leader = leader.to_string();
        }
        Ok(GroupOutcome::Generation { generation })
    }

    fn current<'a>(&'a mut self, name: &str, generation: i32) -> Result<&'a mut Group, GroupError> {
        let g =
            self.groups.get_mut(name).ok_or_else(|| GroupError::UnknownGroup { group: name.to_string() })?;
        if g.generation != generation {
            return Err(GroupError::IllegalGeneration {
                group: name.to_string(),
                got: generation,
                current: g.generation,
            });
        }
        Ok(g)
    }

    fn assign(
        &mut self,
        name: &str,
        generation: i32,
        assignments: &[(String, Vec<u8>)],
    ) -> Result<GroupOutcome, GroupError> {
        let bytes: usize = assignments.iter().map(|(_, a)| a.len()).sum();
        if bytes > GROUP_ASSIGNMENT_BYTES_MAX {
            return Err(GroupError::Limit {
                what: format!("assignment bytes of group {name:?}"),
                max: GROUP_ASSIGNMENT_BYTES_MAX,
            });
        }
        let g = self.current(name, generation)?;
        if let Some((m, _)) = assignments.iter().find(|(m, _)| !g.members.contains_key(m)) {
            return Err(GroupError::UnknownMember { group: name.to_string(), member: m.clone() });
        }
        for m in g.members.values_mut() {
            m.assignment.clear();
        }
        for (m, a) in assignments {
            if let Some(member) = g.members.get_mut(m) {
                member.assignment = a.clone();
            }
        }
        g.assigned = true;
        Ok(GroupOutcome::Assigned)
    }

    fn commit(
        &mut self,
        log: &LogState,
        name: &str,
        generation: i32,
        member: &str,
        offsets: &[OffsetSpec],
        commit_ms: i64,
    ) -> Result<GroupOutcome, GroupError> {
        check_group_name(name)?;
        if offsets.len() > OFFSETS_PER_COMMIT_MAX {
            return Err(GroupError::Limit {
                what: "offsets in one commit".into(),
                max: OFFSETS_PER_COMMIT_MAX,
            });
        }
        if generation < 0 {
            // A simple consumer: it owns its partitions by `assign()`, so it may only commit
            // while no generation's members could own them.
            match self.groups.get(name) {
                Some(g) if !g.members.is_empty() => {
                    return Err(GroupError::UnknownMember {
                        group: name.to_string(),
                        member: member.to_string(),
                    })
                }
                Some(_) => {}
                None if self.groups.len() >= GROUPS_LEN_MAX => {
                    return Err(GroupError::Limit { what: "groups".into(), max: GROUPS_LEN_MAX })
                }
                None => {
                    self.groups.insert(name.to_string(), Group::default());
                }
            }
        } else {
            let g = self.current(name, generation)?;
            if !g.members.contains_key(member) {
                return Err(GroupError::UnknownMember {
                    group: name.to_string(),
                    member: member.to_string(),
                });
            }
            if !g.assigned {
                // Kafka refuses commits between a generation and its assignment: the member
                // cannot know yet which partitions it owns.
                return Err(GroupError::RebalanceInProgress { group: name.to_string(), generation });
            }
        }
        let g = self.groups.get_mut(name).expect("the group exists: checked or inserted above");
        let results = offsets
            .iter()
            .map(|o| {
                if o.offset < 0 {
                    return Err(OffsetRefusal::InvalidOffset { offset: o.offset });
                }
                if o.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                    return Err(OffsetRefusal::MetadataTooLarge { bytes: o.metadata.len() });
                }
                if log.partition(&o.topic, o.partition).is_none() {
                    return Err(OffsetRefusal::UnknownTopicOrPartition);
                }
                let key = (o.topic.clone(), o.partition);
                if !g.offsets.contains_key(&key) && g.offsets.len() >= GROUP_OFFSETS_LEN_MAX {
                    // Reported per partition as the closest Kafka code the caller has; the
                    // limit is documented.
                    return Err(OffsetRefusal::UnknownTopicOrPartition);
                }
                let c = CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_ms,
                };
                g.offsets.insert(key, c);
                Ok(())
            })
            .collect();
        Ok(GroupOutcome::Committed { results })
    }

    fn delete(&mut self, name: &str) -> Result<(), GroupError> {
        match self.groups.get(name) {
            None => Err(GroupError::UnknownGroup { group: name.to_string() }),
            Some(g) if !g.members.is_empty() => Err(GroupError::NotEmpty { group: name.to_string() }),
            Some(_) => {
                self.groups.remove(name);
                Ok(())
            }
        }
    }

    /// Drops the offsets of a deleted topic from every group (a recreated topic starts fresh).
    pub fn forget_topic(&mut self, topic: &str) {
        for g in self.groups.values_mut() {
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{TopicConfig, TopicSpec};
    use proptest::prelude::*;

    fn log_with(topic: &str, partitions: u32) -> LogState {
        let mut log = LogState::default();
        let spec = TopicSpec { name: topic.into(), partitions, replicas: 3, config: TopicConfig::default() };
        log.create_topic(1, &spec).unwrap();
        log
    }

    fn member(id: &str) -> GroupMember {
        GroupMember {
            id: id.into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            ..Default::default()
        }
    }

    fn generation(expected: i32, members: &[&str]) -> GroupCommand {
        GroupCommand::Generation {
            group: "g".into(),
            expected,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            leader: members.first().map_or(String::new(), |m| m.to_string()),
            members: members.iter().map(|m| member(m)).collect(),
        }
    }

    /// A generation and an (empty) assignment for it: the members may commit.
    fn stable(
        s: &mut GroupsState,
        log: &LogState,
        expected: i32,
        members: &[&str],
    ) -> Result<GroupOutcome, GroupError> {
        let outcome = s.apply(log, &generation(expected, members))?;
        if !members.is_empty() {
            let assign =
                GroupCommand::Assign { group: "g".into(), generation: expected + 1, assignments: Vec::new() };
            s.apply(log, &assign).expect("the generation was just made");
        }
        Ok(outcome)
    }

    fn commit(generation: i32, member: &str, offset: i64) -> GroupCommand {
        GroupCommand::CommitOffsets {
            group: "g".into(),
            generation,
            member: member.into(),
            offsets: vec![OffsetSpec {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: String::new(),
            }],
            commit_ms: 5,
        }
    }

    fn committed(s: &GroupsState) -> Option<i64> {
        s.group("g")?.offsets.get(&("t".to_string(), 0)).map(|c| c.offset)
    }

    /// A commit from a member of the previous generation is refused and leaves the offset;
    /// the current generation's member commits.
    #[test]
    fn stale_generation_commit_is_refused() {
        let log = log_with("t", 2);
        let mut s = GroupsState::default();
        assert_eq!(stable(&mut s, &log, 0, &["a", "b"]), Ok(GroupOutcome::Generation { generation: 1 }));
        assert!(s.apply(&log, &commit(1, "a", 10)).is_ok());
        assert_eq!(s.apply(&log, &generation(1, &["b"])), Ok(GroupOutcome::Generation { generation: 2 }));
        assert_eq!(
            s.apply(&log, &commit(2, "b", 15)),
            Err(GroupError::RebalanceInProgress { group: "g".into(), generation: 2 }),
            "no commit before the generation's assignment"
        );
        let assign = GroupCommand::Assign { group: "g".into(), generation: 2, assignments: Vec::new() };
        s.apply(&log, &assign).unwrap();
        assert_eq!(
            s.apply(&log, &commit(1, "a", 99)),
            Err(GroupError::IllegalGeneration { group: "g".into(), got: 1, current: 2 })
        );
        assert_eq!(
            s.apply(&log, &commit(2, "a", 99)),
            Err(GroupError::UnknownMember { group: "g".into(), member: "a".into() })
        );
        assert_eq!(committed(&s), Some(10));
        assert!(s.apply(&log, &commit(2, "b", 20)).is_ok());
        assert_eq!(committed(&s), Some(20));
    }

    /// Two coordinators racing from one generation: the second compare-and-set is refused.
    #[test]
    fn generation_is_a_compare_and_set() {
        let log = log_with("t", 1);
        let mut s = GroupsState::default();
        assert!(s.apply(&log, &generation(0, &["a"])).is_ok());
        assert_eq!(
            s.apply(&log, &generation(0, &["b"])),
            Err(GroupError::StaleGeneration { group: "g".into(), expected: 0, current: 1 })
        );
        assert_eq!(s.group("g").unwrap().leader, "a");
    }

    /// Simple consumers (generation -1) commit only while the group has no members; an empty
    /// generation keeps the offsets and lets them commit again.
    #[test]
    fn simple_consumer_commits_only_to_an_empty_group() {
        let log = log_with("t", 1);
        let mut s = GroupsState::default();
        assert!(s.apply(&log, &commit(-1, "", 3)).is_ok());
        assert_eq!(committed(&s), Some(3));
        assert!(s.apply(&log, &generation(0, &["a"])).is_ok());
        assert!(matches!(s.apply(&log, &commit(-1, "", 4)), Err(GroupError::UnknownMember { .. })));
        assert!(s.apply(&log, &generation(1, &[])).is_ok());
        assert_eq!(s.group("g").unwrap().generation, 2);
        assert!(s.apply(&log, &commit(-1, "", 5)).is_ok());
        assert_eq!(committed(&s), Some(5));
        assert_eq!(s.group("g").unwrap().protocol_type, "consumer");
    }

    /// Per-partition refusals: unknown partition, negative offset, oversized metadata; the
    /// valid offsets of the same commit are stored.
    #[test]
    fn bad_offsets_are_refused_one_by_one() {
        let log = log_with("t", 1);
        let mut s = GroupsState::default();
        let o = |topic: &str, partition, offset, metadata: usize| OffsetSpec {
            topic: topic.into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: "m".repeat(metadata),
        };
        let c = GroupCommand::CommitOffsets {
            group: "g".into(),
            generation: -1,
            member: String::new(),
            offsets: vec![
                o("t", 0, 7, 0),
                o("t", 1, 7, 0),
                o("nope", 0, 7, 0),
                o("t", 0, -2, 0),
                o("t", 0, 8, 5000),
            ],
            commit_ms: 0,
        };
        let GroupOutcome::Committed { results } = s.apply(&log, &c).unwrap() else { panic!("not a commit") };
        assert_eq!(
            results,
            vec![
                Ok(()),
                Err(OffsetRefusal::UnknownTopicOrPartition),
                Err(OffsetRefusal::UnknownTopicOrPartition),
                Err(OffsetRefusal::InvalidOffset { offset: -2 }),
                Err(OffsetRefusal::MetadataTooLarge { bytes: 5000 }),
            ]
        );
        assert_eq!(committed(&s), Some(7));
    }

    /// Assignments are recorded only for the current generation and its members.
    #[test]
    fn assignment_is_fenced_too() {
        let log = log_with("t", 1);
        let mut s = GroupsState::default();
        s.apply(&log, &generation(0, &["a", "b"])).unwrap();
        let assign = |generation, m: &str| GroupCommand::Assign {
            group: "g".into(),
            generation,
            assignments: vec![(m.to_string(), vec![1, 2, 3])],
        };
        assert!(matches!(s.apply(&log, &assign(0, "a")), Err(GroupError::IllegalGeneration { .. })));
        assert!(matches!(s.apply(&log, &assign(1, "z")), Err(GroupError::UnknownMember { .. })));
        assert_eq!(s.apply(&log, &assign(1, "a")), Ok(GroupOutcome::Assigned));
        let g = s.group("g").unwrap();
        assert!(g.assigned);
        assert_eq!(g.members["a"].assignment, vec![1, 2, 3]);
        assert!(g.members["b"].assignment.is_empty());
    }

    /// Only empty groups are deleted; deleting forgets their offsets.
    #[test]
    fn delete_needs_an_empty_group() {
        let log = log_with("t", 1);
        let mut s = GroupsState::default();
        s.apply(&log, &generation(0, &["a"])).unwrap();
        let del = GroupCommand::Delete { groups: vec!["g".into(), "none".into()] };
        let GroupOutcome::Deleted { results } = s.apply(&log, &del).unwrap() else { panic!() };
        assert!(matches!(results[0], Err(GroupError::NotEmpty { .. })));
        assert!(matches!(results[1], Err(GroupError::UnknownGroup { .. })));
        s.apply(&log, &generation(1, &[])).unwrap();
        let GroupOutcome::Deleted { results } = s.apply(&log, &del).unwrap() else { panic!() };
        assert_eq!(results[0], Ok(()));
        assert!(s.group("g").is_none());
    }

    proptest! {
        /// Whatever mix of generations, assignments and commits is applied, an offset only
        /// moves by a commit whose generation was current and assigned and whose member was
        /// in it; any other commit changes nothing.
        #[test]
        fn only_current_members_move_offsets(ops in proptest::collection::vec((0u8..4, 0i32..4, 0u8..3, 0i64..1000), 1..60)) {
            let log = log_with("t", 1);
            let mut s = GroupsState::default();
            let names = ["a", "b", "c"];
            for (kind, generation, m, offset) in ops {
                let before = s.clone();
                let current = s.group("g").map_or(0, |g| g.generation);
                let cmd = match kind {
                    0 => self::generation(current, &names[..=usize::from(m)]),
                    1 => GroupCommand::Assign { group: "g".into(), generation: current, assignments: Vec::new() },
                    _ => commit(generation, names[usize::from(m)], offset),
                };
                let r = s.apply(&log, &cmd);
                if let GroupCommand::CommitOffsets { generation, member, .. } = &cmd {
                    let g = before.group("g");
                    let allowed = g.is_some_and(|g| {
                        g.generation == *generation && g.members.contains_key(member) && g.assigned
                    });
                    prop_assert_eq!(r.is_ok(), allowed);
                    if !allowed {
                        prop_assert_eq!(&s, &before);
                    }
                }
            }
        }
    }
}
