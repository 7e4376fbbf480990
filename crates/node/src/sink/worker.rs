//! One assigned partition's worker: reads the log, drives the `PartitionSink` and executes
//! its effects (warehouse transactions, dead letters, group commits).

use super::*;

pub(super) struct Worker {
    manager: Arc<SinkManager>,
    def: Arc<SinkDef>,
    /// The member and generation this worker delivers for: its group commits carry them, so
    /// a worker of a stale generation cannot move the group's offsets.
    member_id: String,
    generation: i32,
    topic: String,
    partition: u32,
    /// Set by the member to end this worker (revocation, pause, stop); the in-flight
    /// transaction finishes first.
    stop: watch::Receiver<bool>,
    /// The warehouse connection, opened lazily and dropped after a transient failure.
    client: Option<tokio_postgres::Client>,
    /// Where the warehouse's offsets row is, as this worker last wrote or read it: the fence.
    pg_position: u64,
    /// The next offset to read from the log.
    fetch_offset: u64,
    /// Fetched records not yet written or dead-lettered (at most `buffered_records_max`:
    /// the machine pauses fetching at that size).
    payloads: BTreeMap<u64, LogRecord>,
    /// The decision maker: retries, budget, breaker, bisection, dead letters.
    machine: PartitionSink,
    /// The machine's `PauseFetch` (buffer full or breaker open) until its `ResumeFetch`.
    fetch_paused: bool,
    /// The partition's high watermark at the last read (for lag).
    high_watermark: u64,
    /// When and what was last committed to the group, and what waits to be (commits are
    /// coalesced to one per `GROUP_COMMIT_INTERVAL_MS`).
    last_group_commit: Option<(Instant, u64)>,
    pending_group_commit: Option<u64>,
    /// The machine's latest `Commit`: when it is past `pg_position` (a dead letter whose
    /// position update failed), the update is retried.
    committed_next: u64,
    /// The last failure, for `sink describe`.
    last_error: String,
    /// The dedup window over the log's offsets before `fetch_offset` (with dedup configured).
    window: Option<quorumdb_core::sink::DedupWindow<EventDigest>>,
    /// Duplicates skipped by this worker (a metric, and `sink describe`).
    deduplicated: u64,
}

/// A wall clock in ms since the epoch.
pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Worker {
    pub(super) fn new(member: &Member, topic: String, partition: u32, stop: watch::Receiver<bool>) -> Worker {
        let def = member.def.clone();
        let seed = u64::from(partition) ^ def.id.rotate_left(17) ^ wall_ms() as u64;
        Worker {
            manager: member.manager.clone(),
            machine: PartitionSink::new(core_config(&def.settings), seed),
            def,
            member_id: member.member_id.clone(),
            generation: member.generation,
            topic,
            partition,
            stop,
            client: None,
            pg_position: 0,
            fetch_offset: 0,
            payloads: BTreeMap::new(),
            fetch_paused: false,
            high_watermark: 0,
            last_group_commit: None,
            pending_group_commit: None,
            committed_next: 0,
            last_error: String::new(),
            window: None,
            deduplicated: 0,
        }
    }

    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("sink", self.def.name.clone()),
            ("topic", self.topic.clone()),
            ("partition", self.partition.to_string()),
        ]
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn publish(&mut self) {
        let now = self.manager.now_ms();
        let breaker = match self.machine.breaker_state(now) {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        };
        let lag = self.high_watermark.saturating_sub(self.pg_position);
        metrics::gauge!("quorumdb_sink_lag_records", &self.labels()).set(lag as f64);
        let status = PartitionStatus {
            pg_offset: Some(self.pg_position),
            high_watermark: self.high_watermark,
            written: self.machine.written,
            retries: self.machine.retries,
            dead_lettered: self.machine.dead_lettered,
            deduplicated: self.deduplicated,
            breaker,
            last_error: self.last_error.clone(),
        };
        lock(&self.manager.status)
            .entry(self.def.name.clone())
            .or_default()
            .insert((self.topic.clone(), self.partition), status);
    }

    fn unpublish(&self) {
        // This node no longer delivers the partition: its share of the lag and breaker
        // gauges is nothing (the new owner's node reports them).
        metrics::gauge!("quorumdb_sink_lag_records", &self.labels()).set(0.0);
        metrics::gauge!("quorumdb_sink_breaker_open", &self.labels()).set(0.0);
        let mut status = lock(&self.manager.status);
        if let Some(parts) = status.get_mut(&self.def.name) {
            parts.remove(&(self.topic.clone(), self.partition));
        }
    }

    pub(super) async fn run(mut self) {
        // Each pass starts from the warehouse's position; a fence (another worker moved it)
        // or a lost connection at start begins a new pass.
        while !self.stopped() {
            match self.start_position().await {
                Ok(()) => {}
                Err(f) => {
                    self.last_error = failure_text(&f);
                    self.client = None;
                    self.publish();
                    self.sleep(RETRY_WAIT_MS * 2).await;
                    continue;
                }
            }
            self.deliver().await;
        }
        self.flush_group_commit().await;
        self.unpublish();
    }

    async fn sleep(&mut self, ms: u64) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = stop.changed() => {}
        }
    }

    async fn client(&mut self) -> Result<&mut tokio_postgres::Client, Failure> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut c = connect(&self.def).await?;
            // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in the catalog, so the
            // workers of every node serialize their DDL on an advisory lock.
            let t = pg(c.transaction()).await?;
            pg(t.execute("SELECT pg_advisory_xact_lock(7428111)", &[])).await?;
            for statement in ddl(&self.def) {
                pg(t.batch_execute(&statement)).await?;
            }
            pg(t.commit()).await?;
            self.client = Some(c);
        }
        self.client.as_mut().ok_or_else(|| Failure::Transient("no connection".into()))
    }

    /// Reads (or creates) the partition's offsets row and resets the delivery state to it.
    async fn start_position(&mut self) -> Result<(), Failure> {
        let log_start = self
            .manager
            .broker
            .list_offset(&self.topic, self.partition as i32, OffsetQuery::Earliest)
            .map(|(o, _)| u64::try_from(o).unwrap_or(0))
            .unwrap_or(0);
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let start = i64::try_from(log_start).unwrap_or(i64::MAX);
        let client = self.client().await?;
        pg(client.execute(
            "INSERT INTO quorumdb_sink_offsets (sink, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&sink, &topic, &partition, &start],
        ))
        .await?;
        let row = pg(client.query_one(
            "SELECT next_offset FROM quorumdb_sink_offsets WHERE sink = $1 AND topic = $2 AND partition = $3",
            &[&sink, &topic, &partition],
        ))
        .await?;
        let next: i64 = row.try_get(0).map_err(|e| Failure::Transient(e.to_string()))?;
        let mut next = u64::try_from(next).unwrap_or(0);
        if next < log_start {
            // Retention dropped records the sink never delivered: they are gone from the log.
            tracing::warn!(sink = %sink, topic = %topic, partition, next, log_start, "records trimmed before delivery");
            let moved = pg(client.execute(
                FENCED_UPDATE,
                &[&sink, &topic, &partition, &start, &i64::try_from(next).unwrap_or(i64::MAX)],
            ))
            .await?;
            if moved == 1 {
                next = log_start;
            } else {
                return Err(Failure::Transient("the offsets row moved while starting".into()));
            }
        }
        self.pg_position = next;
        self.committed_next = next;
        self.fetch_offset = next;
        self.payloads.clear();
        self.rebuild_window(log_start.max(next.saturating_sub(self.window_span())), next).await;
        let seed = u64::from(self.partition) ^ self.def.id.rotate_left(17) ^ wall_ms() as u64;
        self.machine = PartitionSink::new(core_config(&self.def.settings), seed);
        self.fetch_paused = false;
        self.publish();
        Ok(())
    }

    /// Offsets the dedup window spans (0 without dedup).
    fn window_span(&self) -> u64 {
        self.def.dedup.as_ref().map_or(0, |d| u64::from(d.window_records))
    }

    /// Rebuilds the dedup window from the log's records in `from..to` (the window before the
    /// position), so a restarted or moved worker decides as the previous one did. Reads are
    /// bounded by the window's span; offsets the log no longer holds are simply missing from it.
    async fn rebuild_window(&mut self, from: u64, to: u64) {
        self.window = new_window(&self.def);
        if self.window.is_none() {
            return;
        }
        let mut at = from;
        while at < to && !self.stopped() {
            let read = self.read_log(at).await;
            let Ok(read) = read else { break };
            let decoded = decode_records(&read.records, at);
            let Some(last) = decoded.keys().next_back().copied() else { break };
            for (o, r) in decoded.range(..to) {
                judge(&self.def, self.window.as_mut(), *o, r);
            }
            at = last + 1;
        }
    }

    /// Delivers until stopped or fenced.
    async fn deliver(&mut self) {
        let mut appended = self.manager.broker.appended();
        let mut last_publish = Instant::now();
        loop {
            if self.stopped() {
                return;
            }
            let now = self.manager.now_ms();
            self.machine.tick(now);
            let effects = self.machine.take_effects();
            let busy = !effects.is_empty();
            for e in effects {
                if self.effect(e).await.is_err() {
                    // Fenced: start over from the warehouse's position.
                    return;
                }
            }
            let mut fetched = false;
            if !self.fetch_paused && self.payloads.len() < self.def.settings.buffered_records_max as usize {
                fetched = self.fetch().await;
            }
            if last_publish.elapsed() >= Duration::from_millis(250) {
                if self.committed_next > self.pg_position {
                    let _ = self.move_position(self.committed_next).await;
                }
                self.publish();
                self.flush_group_commit().await;
                last_publish = Instant::now();
            }
            if !busy && !fetched {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
                    _ = appended.changed() => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// One read of the partition's log from `offset` (at most `READ_BYTES_MAX`).
    async fn read_log(&self, offset: u64) -> Result<quorumdb_kafka::broker::Records, LogError> {
        let at = i64::try_from(offset).unwrap_or(i64::MAX);
        self.manager.broker.read(&self.topic, self.partition as i32, at, READ_BYTES_MAX).await
    }

    /// One read from the log; whether it brought records.
    async fn fetch(&mut self) -> bool {
        let read = self.read_log(self.fetch_offset).await;
        let records = match read {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange) => {
                // Trimmed past our position: the next pass starts at the log start.
                if let Ok((start, _)) =
                    self.manager.broker.list_offset(&self.topic, self.partition as i32, OffsetQuery::Earliest)
                {
                    let start = u64::try_from(start).unwrap_or(0);
                    if start > self.fetch_offset && self.payloads.is_empty() {
                        self.fetch_offset = start;
                    }
                }
                return false;
            }
            Err(_) => return false,
        };
        self.high_watermark = u64::try_from(records.high_watermark).unwrap_or(0);
        let decoded = decode_records(&records.records, self.fetch_offset);
        if decoded.is_empty() {
            return false;
        }
        let room = (self.def.settings.buffered_records_max as usize).saturating_sub(self.payloads.len());
        let mut batch: Vec<(u64, LogRecord)> = decoded.into_iter().take(room.max(1)).collect();
        let mut offsets = Vec::with_capacity(batch.len());
        for (o, r) in &mut batch {
            let v = judge(&self.def, self.window.as_mut(), *o, r);
            r.duplicate = v.duplicate;
            offsets.push(match v.rejected {
                Some(why) => Record::rejected(*o, why),
                None => Record::new(*o),
            });
        }
        if let Some((last, _)) = batch.last() {
            self.fetch_offset = last + 1;
        }
        self.payloads.extend(batch);
        self.machine.fetched(self.manager.now_ms(), &offsets);
        true
    }

    /// Carries out one effect; `Err` when fenced.
    async fn effect(&mut self, e: SinkEffect) -> Result<(), ()> {
        match e {
            SinkEffect::Write { first, last } => {
                let started = Instant::now();
                let result = self.write(first, last).await;
                let now = self.manager.now_ms();
                let sink = [("sink", self.def.name.clone())];
                metrics::histogram!("quorumdb_sink_write_seconds", &sink)
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        let committed = wall_ms();
                        let duplicates =
                            self.payloads.range(first..=last).filter(|(_, r)| r.duplicate).count();
                        let rows = self.payloads.range(first..=last).count() - duplicates;
                        if duplicates > 0 {
                            self.deduplicated += duplicates as u64;
                            metrics::counter!("quorumdb_sink_deduplicated_total", &sink)
                                .increment(duplicates as u64);
                        }
                        for r in self.payloads.range(first..=last).map(|(_, r)| r).filter(|r| !r.duplicate) {
                            let e2e = (committed - r.timestamp_ms).max(0) as f64 / 1000.0;
                            metrics::histogram!("quorumdb_sink_end_to_end_seconds", &sink).record(e2e);
                        }
                        metrics::counter!("quorumdb_sink_rows_written_total", &sink).increment(rows as u64);
                        self.pg_position = last + 1;
                        self.payloads = self.payloads.split_off(&(last + 1));
                        self.last_error.clear();
                        self.machine.written(now);
                    }
                    Err(WriteError::Fenced) => {
                        tracing::warn!(sink = %self.def.name, topic = %self.topic, partition = self.partition,
                            "the offsets row moved (another worker wrote): re-reading the position");
                        metrics::counter!("quorumdb_sink_fenced_total", &sink).increment(1);
                        return Err(());
                    }
                    Err(WriteError::Failed(f)) => {
                        self.last_error = failure_text(&f);
                        if matches!(f, Failure::Transient(_)) {
                            // The connection may be broken: open a new one for the retry.
                            self.client = None;
                        }
                        self.machine.failed(now, f);
                        metrics::counter!("quorumdb_sink_retries_total", &sink).increment(1);
                    }
                }
                self.publish_breaker();
            }
            SinkEffect::DeadLetter { offset, error, attempts } => {
                let now = self.manager.now_ms();
                match self.dead_letter(offset, &error, attempts).await {
                    Ok(()) => {
                        metrics::counter!("quorumdb_sink_dead_lettered_total", "sink" => self.def.name.clone())
                            .increment(1);
                        self.payloads.remove(&offset);
                        self.machine.dead_lettered(now);
                        // Best effort: move the warehouse's position past the dead letter now
                        // (the next write's transaction moves it anyway).
                        let _ = self.move_position(offset + 1).await;
                    }
                    Err(e) => {
                        self.last_error = truncate(format!("dead-letter produce failed: {e}"));
                        self.machine.dead_letter_failed(now);
                    }
                }
            }
            SinkEffect::Commit { next } => {
                self.committed_next = next;
                self.pending_group_commit = Some(next);
                let due = self
                    .last_group_commit
                    .is_none_or(|(at, _)| at.elapsed() >= Duration::from_millis(GROUP_COMMIT_INTERVAL_MS));
                if due {
                    self.flush_group_commit().await;
                }
            }
            SinkEffect::PauseFetch => self.fetch_paused = true,
            SinkEffect::ResumeFetch => self.fetch_paused = false,
        }
        Ok(())
    }

    fn publish_breaker(&mut self) {
        let open = matches!(self.machine.breaker_state(self.manager.now_ms()), BreakerState::Open { .. });
        metrics::gauge!("quorumdb_sink_breaker_open", &self.labels()).set(if open { 1.0 } else { 0.0 });
        self.publish();
    }

    /// The group offset, for lag display (`group describe`); the warehouse's stays the truth.
    async fn flush_group_commit(&mut self) {
        let Some(next) = self.pending_group_commit else { return };
        if self.last_group_commit.is_some_and(|(_, n)| n == next) {
            self.pending_group_commit = None;
            return;
        }
        let spec = OffsetSpec {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: i64::try_from(next).unwrap_or(i64::MAX),
            leader_epoch: -1,
            metadata: String::new(),
        };
        let group = self.def.group();
        let commit = self.manager.broker.commit_offsets(&group, self.generation, &self.member_id, vec![spec]);
        if let Ok(Ok(results)) = tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), commit).await {
            if results.iter().all(Result::is_ok) {
                self.pending_group_commit = None;
            }
        }
        // A refused commit (a rebalance started) is harmless: the next owner commits its own.
        self.last_group_commit = Some((Instant::now(), next));
    }

    /// One transaction: the rows of `first..=last` and the fenced position update.
    async fn write(&mut self, first: u64, last: u64) -> Result<(), WriteError> {
        let mut offsets = Vec::new();
        let mut keys: Vec<Option<Vec<u8>>> = Vec::new();
        let mut values: Vec<Option<Vec<u8>>> = Vec::new();
        let mut timestamps = Vec::new();
        // Duplicates inside the dedup window are not written; the position still moves past them.
        for (o, r) in self.payloads.range(first..=last).filter(|(_, r)| !r.duplicate) {
            offsets.push(i64::try_from(*o).unwrap_or(i64::MAX));
            keys.push(r.key.as_ref().map(|b| b.to_vec()));
            values.push(r.value.as_ref().map(|b| b.to_vec()));
            timestamps.push(r.timestamp_ms);
        }
        let sql = insert_sql(&self.def);
        let field = match &self.def.key {
            SinkKey::Field(f) => Some(f.clone()),
            SinkKey::Offset => None,
        };
        let mapped: Vec<String> = self.def.columns.iter().map(|c| c.field.clone()).collect();
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let (next, fence) = (
            i64::try_from(last + 1).unwrap_or(i64::MAX),
            i64::try_from(self.pg_position).unwrap_or(i64::MAX),
        );
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&topic, &partition, &offsets, &keys, &values, &timestamps];
        if let Some(f) = &field {
            params.push(f);
        }
        if !mapped.is_empty() {
            params.push(&mapped);
        }
        let client = self.client().await.map_err(WriteError::Failed)?;
        let failed = WriteError::Failed;
        let t = pg(client.transaction()).await.map_err(failed)?;
        pg(t.execute(&sql, &params)).await.map_err(failed)?;
        let moved = pg(t.execute(FENCED_UPDATE, &[&sink, &topic, &partition, &next, &fence]))
            .await
            .map_err(failed)?;
        if moved != 1 {
            // Dropping the transaction rolls it back.
            return Err(WriteError::Fenced);
        }
        pg(t.commit()).await.map_err(failed)?;
        if let Some(n) = self.manager.node.config.sink_abort_after_commits {
            let done = self.manager.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if done >= n {
                // The test crash point: the rows and the position are committed, nothing else
                // (group offset, metrics, the machine's state) has happened.
                tracing::error!(commits = done, "sink_abort_after_commits reached: aborting");
                std::process::abort();
            }
        }
        Ok(())
    }

    /// Moves the warehouse's position to `next` (after a dead letter), fenced.
    async fn move_position(&mut self, next: u64) -> Result<(), Failure> {
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let (to, fence) =
            (i64::try_from(next).unwrap_or(i64::MAX), i64::try_from(self.pg_position).unwrap_or(i64::MAX));
        let client = self.client().await?;
        let moved = pg(client.execute(FENCED_UPDATE, &[&sink, &topic, &partition, &to, &fence])).await?;
        if moved == 1 {
            self.pg_position = next;
        }
        Ok(())
    }

    /// Produces the record to the dead-letter topic (created if missing) with acks=all.
    async fn dead_letter(&mut self, offset: u64, error: &str, attempts: u32) -> Result<(), String> {
        let dlq = self.def.dead_letter_topic.clone();
        let broker = self.manager.broker.clone();
        let info = match broker.topic(&dlq) {
            Some(t) => t,
            None => {
                let new = NewTopic {
                    name: dlq.clone(),
                    partitions: Some(1),
                    replication_factor: None,
                    retention_ms: None,
                    retention_bytes: None,
                };
                match broker.create_topics(vec![new], false, DLQ_PRODUCE_TIMEOUT_MS).await.pop() {
                    Some(Ok(t)) => t,
                    Some(Err(LogError::TopicAlreadyExists(_))) => {
                        broker.topic(&dlq).ok_or_else(|| format!("{dlq} exists but is not visible yet"))?
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("no answer".into()),
                }
            }
        };
        let partitions = u32::try_from(info.partitions.len()).unwrap_or(1).max(1);
        let target = i32::try_from(self.partition % partitions).unwrap_or(0);
        let record = self.payloads.get(&offset);
        let headers: Vec<(&str, Vec<u8>)> = vec![
            ("quorumdb.error", truncate(error.to_string()).into_bytes()),
            ("quorumdb.attempts", attempts.to_string().into_bytes()),
            ("quorumdb.source.topic", self.topic.clone().into_bytes()),
            ("quorumdb.source.partition", self.partition.to_string().into_bytes()),
            ("quorumdb.source.offset", offset.to_string().into_bytes()),
        ];
        let batch = dead_letter_batch(
            record.and_then(|r| r.key.as_deref()),
            record.and_then(|r| r.value.as_deref()),
            &headers,
            record.map_or_else(wall_ms, |r| r.timestamp_ms),
        );
        let split = quorumdb_kafka::split_batches(&batch, batch.len()).map_err(|e| e.to_string())?;
        let Some((header, batch)) = split.into_iter().next() else { return Err("empty batch".into()) };
        let append = Append { topic: dlq, partition: target, header, batch };
        match broker.produce(vec![append], DLQ_PRODUCE_TIMEOUT_MS).await.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no answer".into()),
        }
    }
}

pub(super) fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Transient(e) => format!("transient: {e}"),
        Failure::Permanent(e) => format!("permanent: {e}"),
    }
}
