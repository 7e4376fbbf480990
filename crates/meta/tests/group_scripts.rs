//! Scripted scenarios for the consumer-group coordinator (`quorumdb_meta::coordinator`) and
//! the replicated group state it proposes to (`quorumdb_meta::group`), in the style of toyDB's
//! Raft scripts: the script plays the Kafka clients, the Raft log and the clock.
//!
//! Each file under `tests/scripts/group/` is a goldenscript. Regenerate with
//! `UPDATE_GOLDENFILES=1 cargo test -p quorumdb-meta --test group_scripts` and *read* the
//! diff: a blessed bug is worse than no test.
//!
//! Clients are named by aliases (`c1`, `c2`); the member ids the coordinator hands out are
//! shown as those aliases. One group, `g`, over topic `t` with 4 partitions.
//!
//! ```text
//! join c1 [range roundrobin] [session=10000] [rebalance=20000] [v4]
//!                                  JoinGroup (its known member id, else a new member; v4: a
//!                                  new member first gets MEMBER_ID_REQUIRED)
//! sync c1 [gen=N] [c1=p0/p1 c2=p2/p3]   SyncGroup; the leader passes the assignment
//! heartbeat c1 [gen=N]             Heartbeat (default: the client's last generation)
//! leave c1 [c2 ...]                LeaveGroup
//! commit c1 p=0 offset=10 [gen=N]  OffsetCommit, as the Kafka handler proposes it (simple: an
//!                                  `assign()` consumer, generation -1, no member id)
//! tick 500                         advance the clock and tick the coordinator
//! raft apply|hold|fail             proposals apply at once (default), wait for `raft commit`,
//!                                  or fail as not committed (outcome unknown)
//! raft commit                      apply the held proposals, in order
//! failover                         a new coordinator (another node) takes over the group from
//!                                  the replicated state; the old one steps down
//! status                           the group as the coordinator and the replicated state see it
//! ```
//! Answers print as `c1: ...` when they happen, proposals as `propose ...`.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{Command, Context};
use quorumdb_meta::coordinator::{
    Coordinator, CoordinatorConfig, Effect, GroupCode, JoinRequest, ProposalFailure, Request, RequestId,
    Response,
};
use quorumdb_meta::group::{GroupCommand, GroupsState, OffsetSpec};
use quorumdb_meta::log::{LogState, TopicConfig, TopicSpec};

#[path = "../../core/tests/support/mod.rs"]
mod support;

const GROUP: &str = "g";
const TOPIC: &str = "t";

#[derive(Clone, Copy, PartialEq, Eq)]
enum RaftMode {
    Apply,
    Hold,
    Fail,
}

struct Runner {
    coordinator: Coordinator,
    /// Raft ids of the coordinators so far; the last one is current.
    node: u64,
    state: GroupsState,
    log: LogState,
    now_ms: u64,
    next_request: RequestId,
    /// Request → the client that sent it.
    requests: BTreeMap<RequestId, String>,
    /// Client alias → its member id and last generation, as its answers told it.
    clients: BTreeMap<String, (String, i32)>,
    mode: RaftMode,
    held: VecDeque<(u64, u64, GroupCommand)>,
    out: String,
    echo: bool,
}

impl Runner {
    fn new() -> Self {
        let mut log = LogState::default();
        let spec =
            TopicSpec { name: TOPIC.into(), partitions: 4, replicas: 3, config: TopicConfig::default() };
        log.create_topic(1, &spec).expect("a valid topic");
        Runner {
            coordinator: Coordinator::new(1, CoordinatorConfig::default()),
            node: 1,
            state: GroupsState::default(),
            log,
            now_ms: 1_000,
            next_request: 1,
            requests: BTreeMap::new(),
            clients: BTreeMap::new(),
            mode: RaftMode::Apply,
            held: VecDeque::new(),
            out: String::new(),
            echo: false,
        }
    }

    /// A member id as the alias of its client. The coordinator builds member ids as Kafka
    /// does, from the client id (here the alias) and a unique suffix.
    fn alias(&self, id: &str) -> String {
        if id.is_empty() {
            return "-".into();
        }
        id.split('-').next().unwrap_or(id).to_string()
    }

    fn member_of(&self, client: &str) -> String {
        self.clients.get(client).map(|(m, _)| m.clone()).unwrap_or_default()
    }

    fn generation_of(&self, client: &str) -> i32 {
        self.clients.get(client).map(|(_, g)| *g).unwrap_or(-1)
    }

    fn send(&mut self, client: &str, request: Request) {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, client.to_string());
        self.coordinator.request(self.now_ms, id, request, &self.state);
        self.pump();
    }

    /// Carries out the coordinator's effects until it is quiet.
    fn pump(&mut self) {
        loop {
            let effects = self.coordinator.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Respond { request, response } => self.answer(request, response),
                    Effect::Propose { token, command } => {
                        let _ = writeln!(self.out, "propose {}", self.show_command(&command));
                        match self.mode {
                            RaftMode::Apply => self.apply(self.node, token, command),
                            RaftMode::Hold => self.held.push_back((self.node, token, command)),
                            RaftMode::Fail => {
                                let _ = writeln!(self.out, "  not committed");
                                self.coordinator.proposed(
                                    self.now_ms,
                                    token,
                                    Err(ProposalFailure::Unavailable),
                                    &self.state,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies a committed command to the replicated state and tells its proposer, if that
    /// coordinator is still the current one.
    fn apply(&mut self, proposer: u64, token: u64, command: GroupCommand) {
        let result = self.state.apply(&self.log, &command);
        let _ = writeln!(self.out, "  applied: {}", show_result(&result));
        if proposer == self.node {
            let result = result.map_err(ProposalFailure::Refused);
            self.coordinator.proposed(self.now_ms, token, result, &self.state);
        }
    }

    fn answer(&mut self, request: RequestId, response: Response) {
        let client = self.requests.remove(&request).unwrap_or_else(|| format!("request {request}"));
        let shown = match response {
            Response::Join(Ok(j)) => {
                self.clients.insert(client.clone(), (j.member_id.clone(), j.generation));
                let mut s = format!(
                    "join ok gen={} protocol={} leader={}",
                    j.generation,
                    j.protocol,
                    self.alias(&j.leader)
                );
                if !j.members.is_empty() {
                    let members: Vec<String> = j.members.iter().map(|(m, _, _)| self.alias(m)).collect();
                    let _ = write!(s, " members={}", members.join("+"));
                }
                s
            }
            Response::Join(Err(GroupCode::MemberIdRequired(id))) => {
                self.clients.insert(client.clone(), (id, -1));
                "join MEMBER_ID_REQUIRED (rejoin with the new id)".into()
            }
            Response::Join(Err(e)) => format!("join {}", code(&e)),
            Response::Sync(Ok((_, _, assignment))) => {
                format!("sync ok assignment={}", String::from_utf8_lossy(&assignment))
            }
            Response::Sync(Err(e)) => format!("sync {}", code(&e)),
            Response::Heartbeat(Ok(())) => "heartbeat ok".into(),
            Response::Heartbeat(Err(e)) => format!("heartbeat {}", code(&e)),
            Response::Leave(Ok(left)) => {
                let each: Vec<String> = left
                    .iter()
                    .map(|(m, r)| match r {
                        Ok(()) => format!("{} left", self.alias(m)),
                        Err(e) => format!("{} {}", self.alias(m), code(e)),
                    })
                    .collect();
                format!("leave ok: {}", each.join(", "))
            }
            Response::Leave(Err(e)) => format!("leave {}", code(&e)),
        };
        let _ = writeln!(self.out, "{client}: {shown}");
    }

    fn show_command(&self, command: &GroupCommand) -> String {
        match command {
            GroupCommand::Generation { expected, protocol, leader, members, .. } => {
                let members: Vec<String> = members.iter().map(|m| self.alias(&m.id)).collect();
                format!(
                    "Generation expected={expected} protocol={protocol} leader={} members={}",
                    self.alias(leader),
                    if members.is_empty() { "none".into() } else { members.join("+") }
                )
            }
            GroupCommand::Assign { generation, assignments, .. } => {
                let each: Vec<String> = assignments
                    .iter()
                    .map(|(m, a)| format!("{}={}", self.alias(m), String::from_utf8_lossy(a)))
                    .collect();
                format!("Assign gen={generation} {}", each.join(" "))
            }
            GroupCommand::CommitOffsets { generation, member, offsets, .. } => {
                let each: Vec<String> =
                    offsets.iter().map(|o| format!("p{}={}", o.partition, o.offset)).collect();
                format!("CommitOffsets gen={generation} member={} {}", self.alias(member), each.join(" "))
            }
            GroupCommand::Delete { groups } => format!("Delete {}", groups.join(" ")),
        }
    }

    fn status(&self) -> String {
        let mut s =
            format!("coordinator n{}: {}\n", self.node, self.coordinator.state_name(GROUP, &self.state));
        match self.state.group(GROUP) {
            None => s.push_str("replicated: none\n"),
            Some(g) => {
                let members: Vec<String> = g
                    .members
                    .values()
                    .map(|m| format!("{}[{}]", self.alias(&m.id), String::from_utf8_lossy(&m.assignment)))
                    .collect();
                let _ = writeln!(
                    s,
                    "replicated: gen={} leader={} assigned={} members={}",
                    g.generation,
                    self.alias(&g.leader),
                    g.assigned,
                    if members.is_empty() { "none".into() } else { members.join(" ") }
                );
                for ((topic, partition), o) in &g.offsets {
                    let _ = writeln!(s, "offset {topic}/{partition} = {}", o.offset);
                }
            }
        }
        s
    }
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

fn parse<T: std::str::FromStr>(
    args: &mut goldenscript::ArgumentConsumer<'_>,
    key: &str,
) -> Result<Option<T>, Box<dyn Error>>
where
    T::Err: std::fmt::Display,
{
    match args.take_key(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| format!("{key}={v}: {e}").into()),
    }
}

fn code(e: &GroupCode) -> String {
    match e {
        GroupCode::InvalidRequest(why) => format!("INVALID_REQUEST ({why})"),
        GroupCode::Internal(why) => format!("INTERNAL ({why})"),
        GroupCode::MemberIdRequired(_) => "MEMBER_ID_REQUIRED".into(),
        other => {
            // UnknownMemberId → UNKNOWN_MEMBER_ID, the Kafka spelling.
            let name = format!("{other:?}");
            let mut out = String::new();
            for (i, ch) in name.chars().enumerate() {
                if ch.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

fn show_result<T: std::fmt::Debug, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("refused: {e}"),
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn start_block(&mut self, block: &goldenscript::Block) -> Result<String, Box<dyn Error>> {
        self.echo = support::echo_block(block);
        Ok(String::new())
    }

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        self.out.clear();
        match command.name.as_str() {
            "join" => {
                let client = args.next_pos().ok_or("client not given")?.to_string();
                let mut protocols: Vec<String> =
                    std::iter::from_fn(|| args.next_pos()).map(str::to_owned).collect();
                let require_known_member = protocols.iter().any(|p| p == "v4");
                protocols.retain(|p| p != "v4");
                if protocols.is_empty() {
                    protocols.push("range".into());
                }
                let session_timeout_ms = parse(&mut args, "session")?.unwrap_or(10_000);
                let rebalance_timeout_ms = parse(&mut args, "rebalance")?.unwrap_or(20_000);
                args.reject_next()?;
                let request = Request::Join(JoinRequest {
                    group: GROUP.into(),
                    member_id: self.member_of(&client),
                    instance_id: None,
                    protocol_type: "consumer".into(),
                    protocols: protocols
                        .into_iter()
                        .map(|p| (p, format!("sub-{client}").into_bytes()))
                        .collect(),
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    client_id: client.clone(),
                    client_host: "/127.0.0.1".into(),
                    require_known_member,
                });
                self.send(&client, request);
            }
            "sync" => {
                let client = args.next_pos().ok_or("client not given")?.to_string();
                let generation = parse(&mut args, "gen")?.unwrap_or(self.generation_of(&client));
                let mut assignments = Vec::new();
                while let Some((key, value)) = args.next_key() {
                    let member = self.clients.get(key).ok_or(format!("unknown client {key}"))?.0.clone();
                    assignments.push((member, value.as_bytes().to_vec()));
                }
                args.reject_next()?;
                let member_id = self.member_of(&client);
                self.send(&client, Request::Sync { group: GROUP.into(), generation, member_id, assignments });
            }
            "heartbeat" => {
                let client = args.next_pos().ok_or("client not given")?.to_string();
                let generation = parse(&mut args, "gen")?.unwrap_or(self.generation_of(&client));
                args.reject_next()?;
                let member_id = self.member_of(&client);
                self.send(&client, Request::Heartbeat { group: GROUP.into(), generation, member_id });
            }
            "leave" => {
                let clients: Vec<String> =
                    std::iter::from_fn(|| args.next_pos()).map(str::to_owned).collect();
                args.reject_next()?;
                let first = clients.first().ok_or("client not given")?.clone();
                let member_ids = clients.iter().map(|c| self.member_of(c)).collect();
                self.send(&first, Request::Leave { group: GROUP.into(), member_ids });
            }
            "commit" => {
                let client = args.next_pos().ok_or("client not given")?.to_string();
                let partition: u32 = parse(&mut args, "p")?.ok_or("p= not given")?;
                let offset: i64 = parse(&mut args, "offset")?.ok_or("offset= not given")?;
                let (member, default_generation) = if client == "simple" {
                    (String::new(), -1)
                } else {
                    (self.member_of(&client), self.generation_of(&client))
                };
                let generation = parse(&mut args, "gen")?.unwrap_or(default_generation);
                args.reject_next()?;
                let command = GroupCommand::CommitOffsets {
                    group: GROUP.into(),
                    generation,
                    member,
                    offsets: vec![OffsetSpec {
                        topic: TOPIC.into(),
                        partition,
                        offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                    }],
                    commit_ms: self.now_ms as i64,
                };
                let result = self.state.apply(&self.log, &command);
                let _ = writeln!(self.out, "{client}: commit {}", show_result(&result));
            }
            "tick" => {
                let ms: u64 = args.next_pos().ok_or("milliseconds not given")?.parse()?;
                args.reject_next()?;
                self.now_ms += ms;
                self.coordinator.tick(self.now_ms);
                self.pump();
            }
            "raft" => {
                let what = args.next_pos().ok_or("apply, hold, fail or commit")?.to_string();
                args.reject_next()?;
                match what.as_str() {
                    "apply" => self.mode = RaftMode::Apply,
                    "hold" => self.mode = RaftMode::Hold,
                    "fail" => self.mode = RaftMode::Fail,
                    "commit" => {
                        while let Some((proposer, token, command)) = self.held.pop_front() {
                            let _ = writeln!(self.out, "commit {}", self.show_command(&command));
                            self.apply(proposer, token, command);
                            self.pump();
                        }
                    }
                    other => return Err(format!("raft {other}: expected apply, hold, fail or commit").into()),
                }
            }
            "failover" => {
                args.reject_next()?;
                self.coordinator.step_down();
                self.pump();
                self.node += 1;
                self.coordinator = Coordinator::new(self.node, CoordinatorConfig::default());
                let _ = writeln!(self.out, "coordinator is now n{}", self.node);
            }
            "status" => {
                args.reject_next()?;
                let s = self.status();
                self.out.push_str(&s);
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        if self.out.is_empty() {
            self.out.push_str("ok\n");
        }
        Ok(support::echo(self.echo, command, std::mem::take(&mut self.out))?)
    }
}

const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/group");

scripts!(
    Runner, SCRIPTS_DIR;
    /// Proves a first generation waits the initial delay, the leader alone gets the members, and followers' syncs wait for the leader's committed assignment.
    join_sync_stable,
    /// Proves a member joining a stable group makes the others' heartbeats say REBALANCE_IN_PROGRESS, and a commit from the old generation is refused.
    rebalance_fences_old_generation,
    /// Proves a member that stops heartbeating is dropped after its session timeout and its later requests get UNKNOWN_MEMBER_ID.
    session_expiry,
    /// Proves a new coordinator takes a stable group over from the replicated state without a rebalance, and the old one answers NOT_COORDINATOR.
    failover_keeps_generation,
    /// Proves a deposed coordinator's generation proposal is refused as stale and its members are told to find the new coordinator.
    stale_coordinator_refused,
    /// Proves a v4 join hands out a member id first, simple commits are refused while members exist, and leaving empties the group.
    member_id_required_and_leave,
    /// Proves a generation proposal that does not commit leaves the group rebalancing until a later one does.
    proposal_not_committed,
);
