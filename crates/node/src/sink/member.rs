//! A sink's member of its consumer group `__sink.<name>` on this node: join, the leader's
//! range assignment, heartbeats, and the partition workers of each generation.

use super::*;

/// Why a member's generation ended.
pub(super) enum GenerationEnd {
    Stop,
    /// Rejoin with the same member id (a rebalance, a stale generation).
    Rejoin,
    /// Rejoin as a new member (the coordinator forgot us).
    Reset,
}

pub(super) struct Member {
    pub(super) manager: Arc<SinkManager>,
    /// The definition this member serves; a changed definition (a new id) is a new member.
    pub(super) def: Arc<SinkDef>,
    /// Given by the coordinator (empty until the first join); kept across rebalances, cleared
    /// when the coordinator forgets it (`UNKNOWN_MEMBER_ID`).
    pub(super) member_id: String,
    /// The generation joined last; heartbeats and the workers' group commits carry it.
    pub(super) generation: i32,
    /// The sink's topics' partitions when this generation was joined: a topic created or
    /// grown since makes the member rejoin, so the leader assigns the new partitions (Kafka
    /// consumers rejoin on such metadata changes too).
    pub(super) partitions_at_join: usize,
}

impl Member {
    pub(super) fn partitions_now(&self) -> usize {
        self.def.topics.iter().filter_map(|t| self.manager.broker.topic(t)).map(|t| t.partitions.len()).sum()
    }
}

/// Kafka's consumer-protocol subscription (version 0): the topics, no user data.
pub(super) fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(i32::try_from(topics.len()).unwrap_or(0));
    for t in topics {
        b.put_i16(i16::try_from(t.len()).unwrap_or(0));
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.to_vec()
}

/// Kafka's consumer-protocol assignment (version 0), which `group describe` decodes.
pub(super) fn encode_assignment(parts: &BTreeMap<String, Vec<i32>>) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(i32::try_from(parts.len()).unwrap_or(0));
    for (t, ps) in parts {
        b.put_i16(i16::try_from(t.len()).unwrap_or(0));
        b.put_slice(t.as_bytes());
        b.put_i32(i32::try_from(ps.len()).unwrap_or(0));
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(-1);
    b.to_vec()
}

/// The range assignor: per topic, members sorted by id take consecutive partition ranges,
/// the first `partitions % members` one more.
pub fn range_assign(
    members: &[String],
    topics: &[(String, u32)],
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
        sorted.iter().map(|m| ((*m).clone(), BTreeMap::new())).collect();
    let n = sorted.len() as u32;
    if n == 0 {
        return out;
    }
    for (topic, partitions) in topics {
        let (each, extra) = (partitions / n, partitions % n);
        let mut next = 0u32;
        for (i, m) in sorted.iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            let ps: Vec<i32> = (next..next + take).filter_map(|p| i32::try_from(p).ok()).collect();
            next += take;
            if let Some(a) = out.get_mut(*m) {
                a.insert(topic.clone(), ps);
            }
        }
    }
    out
}

impl Member {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>, mut paused: watch::Receiver<bool>) {
        let name = self.def.name.clone();
        tracing::info!(node = self.manager.node.id(), sink = %name, "sink member starting");
        loop {
            if *stop.borrow() {
                break;
            }
            let assignment = match self.join(&mut stop).await {
                Some(a) => a,
                None => break,
            };
            match self.serve(assignment, &mut stop, &mut paused).await {
                GenerationEnd::Stop => break,
                GenerationEnd::Rejoin => {}
                GenerationEnd::Reset => self.member_id.clear(),
            }
        }
        if !self.member_id.is_empty() {
            let leave =
                GroupRequest::Leave { group: self.def.group(), member_ids: vec![self.member_id.clone()] };
            let _ =
                tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), self.manager.group(leave)).await;
        }
        lock(&self.manager.status).remove(&name);
        tracing::info!(node = self.manager.node.id(), sink = %name, "sink member stopped");
    }

    /// Joins and syncs one generation; `None` when stopped meanwhile.
    async fn join(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Vec<(String, u32)>> {
        let group = self.def.group();
        loop {
            if *stop.borrow() {
                return None;
            }
            let request = GroupRequest::Join(JoinRequest {
                group: group.clone(),
                member_id: self.member_id.clone(),
                instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![(ASSIGNOR.into(), encode_subscription(&self.def.topics))],
                session_timeout_ms: SESSION_TIMEOUT_MS,
                rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
                client_id: self.manager.node.id().to_string(),
                client_host: self.manager.node.config.http_listen.clone(),
                require_known_member: true,
            });
            let joined = tokio::select! {
                r = self.manager.group(request) => r,
                _ = stop.changed() => return None,
            };
            let joined = match joined {
                GroupResponse::Join(Ok(j)) => j,
                GroupResponse::Join(Err(GroupCode::MemberIdRequired(id))) => {
                    self.member_id = id;
                    continue;
                }
                GroupResponse::Join(Err(GroupCode::UnknownMemberId)) => {
                    self.member_id.clear();
                    continue;
                }
                other => {
                    tracing::debug!(sink = %self.def.name, ?other, "join failed; retrying");
                    tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS)).await;
                    continue;
                }
            };
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation;
            self.partitions_at_join = self.partitions_now();
            let assignments = if joined.leader == joined.member_id {
                let members: Vec<String> = joined.members.iter().map(|(id, _, _)| id.clone()).collect();
                let topics: Vec<(String, u32)> = self
                    .def
                    .topics
                    .iter()
                    .filter_map(|t| {
                        let info = self.manager.broker.topic(t)?;
                        Some((t.clone(), u32::try_from(info.partitions.len()).unwrap_or(0)))
                    })
                    .collect();
                range_assign(&members, &topics).into_iter().map(|(m, a)| (m, encode_assignment(&a))).collect()
            } else {
                Vec::new()
            };
            let sync = GroupRequest::Sync {
                group: group.clone(),
                generation: self.generation,
                member_id: self.member_id.clone(),
                assignments,
            };
            match self.manager.group(sync).await {
                GroupResponse::Sync(Ok((_, _, bytes))) => {
                    let parts = crate::http_groups::decode_assignment(&bytes).unwrap_or_default();
                    let mine: Vec<(String, u32)> = parts
                        .into_iter()
                        .flat_map(|a| {
                            let topic = a.topic;
                            a.partitions
                                .into_iter()
                                .filter_map(move |p| u32::try_from(p).ok().map(|p| (topic.clone(), p)))
                        })
                        .collect();
                    tracing::info!(
                        node = self.manager.node.id(),
                        sink = %self.def.name,
                        generation = self.generation,
                        partitions = ?mine,
                        "sink member assigned"
                    );
                    return Some(mine);
                }
                GroupResponse::Sync(Err(GroupCode::UnknownMemberId)) => self.member_id.clear(),
                other => {
                    tracing::debug!(sink = %self.def.name, ?other, "sync failed; rejoining");
                    tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS / 5)).await;
                }
            }
        }
    }

    /// Runs one generation: workers for the assigned partitions (unless paused) and the
    /// heartbeat, until the generation ends. Workers are stopped (their in-flight transaction
    /// finished) before this returns, so the member rejoins only after revoking.
    async fn serve(
        &mut self,
        assignment: Vec<(String, u32)>,
        stop: &mut watch::Receiver<bool>,
        paused: &mut watch::Receiver<bool>,
    ) -> GenerationEnd {
        let mut workers: Option<(watch::Sender<bool>, tokio::task::JoinSet<()>)> = None;
        let mut beat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let want = !*paused.borrow();
            if want && workers.is_none() {
                let (tx, rx) = watch::channel(false);
                let mut set = tokio::task::JoinSet::new();
                for (topic, partition) in &assignment {
                    let w = Worker::new(self, topic.clone(), *partition, rx.clone());
                    set.spawn(w.run());
                }
                workers = Some((tx, set));
            } else if !want {
                if let Some((tx, set)) = workers.take() {
                    stop_workers(tx, set).await;
                }
            }
            tokio::select! {
                _ = stop.changed() => break GenerationEnd::Stop,
                _ = paused.changed() => continue,
                _ = beat.tick() => {}
            }
            let hb = GroupRequest::Heartbeat {
                group: self.def.group(),
                generation: self.generation,
                member_id: self.member_id.clone(),
            };
            match self.manager.group(hb).await {
                GroupResponse::Heartbeat(Ok(())) if self.partitions_now() != self.partitions_at_join => {
                    break GenerationEnd::Rejoin
                }
                GroupResponse::Heartbeat(Ok(())) => {}
                GroupResponse::Heartbeat(Err(
                    GroupCode::RebalanceInProgress | GroupCode::IllegalGeneration,
                )) => break GenerationEnd::Rejoin,
                GroupResponse::Heartbeat(Err(GroupCode::UnknownMemberId)) => break GenerationEnd::Reset,
                // No coordinator right now (a new metadata leader is loading): keep the
                // assignment and keep trying, as Kafka clients do; the group stays stable.
                _ => {}
            }
        };
        if let Some((tx, set)) = workers.take() {
            stop_workers(tx, set).await;
        }
        end
    }
}

pub(super) async fn stop_workers(tx: watch::Sender<bool>, mut set: tokio::task::JoinSet<()>) {
    let _ = tx.send(true);
    // Each worker ends after its in-flight transaction, which is bounded by PG_TIMEOUT_MS;
    // the margin only bounds a bug.
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS * 2), all).await.is_err() {
        set.abort_all();
    }
}
