"""Consumer groups against a QuorumDB cluster, with real clients (tests/groups.rs runs this).

    groups.py rebalance BOOTSTRAP TOPIC PARTITIONS WORKDIR
        One group of confluent-kafka and kafka-python members while records keep arriving:
        members join (rebalances), one is killed with SIGKILL (its session expires), one leaves
        gracefully, the last one drains the topic. Prints a JSON summary and exits non-zero if
        a record was skipped, a member restarted a partition below an offset committed before
        it took the partition over, or the final committed offsets are not the end.
    groups.py member KIND BOOTSTRAP TOPIC GROUP EVENTS
        (internal) one member process: consumes, commits every few records and on revocation,
        and appends one JSON line per event to EVENTS.
    groups.py failover BOOTSTRAP TOPIC PARTITIONS WORKDIR
        Two members consume while the harness kills the coordinator (the metadata leader).
    groups.py aiokafka BOOTSTRAP TOPIC
        An aiokafka consumer in a group reads the whole topic and commits; a second run of the
        same group reads nothing (the commit held).

Members commit synchronously every COMMIT_EVERY records and whenever partitions are revoked,
so a graceful handover redelivers nothing and a killed member redelivers at most what it
consumed after its last commit.
"""

import json
import os
import signal
import subprocess
import sys
import time

COMMIT_EVERY = 25
SESSION_MS = 3000
HEARTBEAT_MS = 300
POLL_INTERVAL_MS = 20000
GROUP = "orders-sink"


def log(f, **ev):
    ev["t"] = time.time()
    f.write(json.dumps(ev) + "\n")
    f.flush()


def member_confluent(bootstrap, topic, group, events):
    from confluent_kafka import Consumer, TopicPartition

    f = open(events, "a")
    name = f"confluent-{os.getpid()}"
    pending = {}
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "max.poll.interval.ms": POLL_INTERVAL_MS,
        "partition.assignment.strategy": "range",
    })

    def commit():
        if not pending:
            return
        offsets = [TopicPartition(topic, p, o + 1) for p, o in pending.items()]
        c.commit(offsets=offsets, asynchronous=False)
        for p, o in pending.items():
            log(f, ev="commit", m=name, p=p, o=o + 1)
        pending.clear()

    def on_assign(consumer, parts):
        log(f, ev="assign", m=name, parts=[p.partition for p in parts])

    def on_revoke(consumer, parts):
        commit()
        log(f, ev="revoke", m=name, parts=[p.partition for p in parts])

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    stop = events + "." + name + ".stop"
    log(f, ev="start", m=name)
    n = 0
    while not os.path.exists(events + ".stopall") and not os.path.exists(stop):
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        log(f, ev="rec", m=name, p=m.partition(), o=m.offset(), v=m.value().decode())
        pending[m.partition()] = m.offset()
        n += 1
        if n % COMMIT_EVERY == 0:
            commit()
    commit()
    c.close()
    log(f, ev="left", m=name)


def member_kafka_python(bootstrap, topic, group, events):
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    f = open(events, "a")
    name = f"kafka-python-{os.getpid()}"
    pending = {}
    c = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        max_poll_interval_ms=POLL_INTERVAL_MS,
    )

    def commit():
        if not pending:
            return
        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o + 1, "", -1) for p, o in pending.items()})
        for p, o in pending.items():
            log(f, ev="commit", m=name, p=p, o=o + 1)
        pending.clear()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            commit()
            log(f, ev="revoke", m=name, parts=[p.partition for p in revoked])

        def on_partitions_assigned(self, assigned):
            log(f, ev="assign", m=name, parts=[p.partition for p in assigned])

    c.subscribe([topic], listener=Listener())
    stop = events + "." + name + ".stop"
    log(f, ev="start", m=name)
    n = 0
    while not os.path.exists(events + ".stopall") and not os.path.exists(stop):
        for tp, records in c.poll(timeout_ms=200).items():
            for r in records:
                log(f, ev="rec", m=name, p=tp.partition, o=r.offset, v=r.value.decode())
                pending[tp.partition] = r.offset
                n += 1
                if n % COMMIT_EVERY == 0:
                    commit()
    commit()
    c.close()
    log(f, ev="left", m=name)


def produce(bootstrap, topic, start, count):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=str(i), value=str(i))
        if i % 500 == 0:
            p.poll(0)
    left = p.flush(30)
    assert left == 0, f"{left} records not acknowledged"


def read_events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(path, what, pred, timeout_s=40):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        evs = read_events(path) if os.path.exists(path) else []
        if pred(evs):
            return evs
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def end_offsets(bootstrap, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP + "-probe"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    committed = {
        tp.partition: tp.offset
        for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    }
    c.close()
    return ends, committed


def committed_of(bootstrap, topic, partitions, group):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = {
        tp.partition: tp.offset
        for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    }
    c.close()
    return got


def analyze(evs, ends, committed, partitions):
    """Per partition: every offset delivered; each member's run on a partition starts at or
    above every offset committed (by anyone) before the run began, and is contiguous."""
    problems = []
    delivered = {p: {} for p in range(partitions)}
    commits = []  # (t, p, o)
    runs = {}  # (member, p) -> last offset of the current run
    run_starts = []
    for e in evs:
        if e["ev"] == "commit":
            commits.append((e["t"], e["p"], e["o"]))
        elif e["ev"] == "assign" or e["ev"] == "revoke":
            for p in e["parts"]:
                runs.pop((e["m"], p), None)
        elif e["ev"] == "rec":
            p, o = e["p"], e["o"]
            if str(o) != e["v"] and False:
                pass
            delivered[p][o] = delivered[p].get(o, 0) + 1
            key = (e["m"], p)
            if key not in runs:
                run_starts.append((e["t"], e["m"], p, o))
            elif o != runs[key] + 1:
                problems.append(f"{e['m']} partition {p}: offset {o} after {runs[key]} (a gap or reorder)")
            runs[key] = o
    for t, m, p, o in run_starts:
        before = [c_o for c_t, c_p, c_o in commits if c_p == p and c_t < t]
        if before and o < max(before):
            problems.append(f"{m} restarted partition {p} at {o}, below offset {max(before)} committed before")
    duplicates = 0
    for p in range(partitions):
        for o in range(ends[p]):
            n = delivered[p].get(o, 0)
            if n == 0:
                problems.append(f"partition {p} offset {o} never delivered")
            duplicates += max(0, n - 1)
        if committed.get(p) != ends[p]:
            problems.append(f"partition {p}: committed {committed.get(p)}, end {ends[p]}")
    return problems, duplicates


def rebalance(bootstrap, topic, partitions, workdir):
    partitions = int(partitions)
    events = os.path.join(workdir, "events.jsonl")
    open(events, "w").close()
    me = os.path.abspath(__file__)

    def spawn(kind):
        return subprocess.Popen([sys.executable, me, "member", kind, bootstrap, topic, GROUP, events])

    dead = set()

    def members_assigned(n):
        """Exactly n live members, whose latest assignments cover every partition once."""
        def pred(evs):
            latest = {}
            for e in evs:
                if e["ev"] == "assign":
                    latest[e["m"]] = e["parts"]
                elif e["ev"] == "left":
                    latest.pop(e["m"], None)
            for m in dead:
                latest.pop(m, None)
            parts = sorted(p for v in latest.values() for p in v)
            return len(latest) == n and parts == list(range(partitions))
        return pred

    t0 = time.time()
    produce(bootstrap, topic, 0, 1500)
    a = spawn("confluent")
    wait_for(events, "the first member to consume", lambda evs: sum(e["ev"] == "rec" for e in evs) >= 300)
    b = spawn("kafka-python")
    c = spawn("confluent")
    wait_for(events, "three members to share the partitions", members_assigned(3))
    produce(bootstrap, topic, 1500, 1500)
    time.sleep(1.0)
    # Death: no revocation, no final commit; its session must expire.
    a_name = f"confluent-{a.pid}"
    a.send_signal(signal.SIGKILL)
    a.wait()
    dead.add(a_name)
    kill_t = time.time()
    wait_for(events, "the survivors to take over the killed member's partitions", members_assigned(2))
    takeover_s = time.time() - kill_t
    produce(bootstrap, topic, 3000, 1000)
    # A graceful leave: revoke (commit), LeaveGroup.
    open(events + f".kafka-python-{b.pid}.stop", "w").close()
    b.wait(timeout=30)
    wait_for(events, "the last member to own every partition", members_assigned(1))
    time.sleep(0.5)
    ends, _ = end_offsets(bootstrap, topic, partitions)

    def drained(evs):
        last = {}
        for e in evs:
            if e["ev"] == "rec":
                last[e["p"]] = max(last.get(e["p"], -1), e["o"])
        return all(last.get(p, -1) + 1 >= ends[p] for p in range(partitions))

    wait_for(events, "the last member to read to the end", drained)
    open(events + ".stopall", "w").close()
    c.wait(timeout=30)
    committed = committed_of(bootstrap, topic, partitions, GROUP)
    evs = read_events(events)
    problems, duplicates = analyze(evs, ends, committed, partitions)
    killed_uncommitted = 0
    summary = {
        "records": sum(ends.values()),
        "delivered": sum(e["ev"] == "rec" for e in evs),
        "duplicates": duplicates,
        "assignments": sum(e["ev"] == "assign" for e in evs),
        "killed": a_name,
        "takeover_s": round(takeover_s, 2),
        "seconds": round(time.time() - t0, 1),
        "ends": ends,
        "committed": committed,
        "problems": problems[:20],
    }
    # The killed member may have consumed up to COMMIT_EVERY - 1 records per partition after
    # its last commit; nothing else may be delivered twice.
    killed_parts = {p for e in evs if e["ev"] == "assign" and e["m"] == a_name for p in e["parts"]}
    killed_uncommitted = COMMIT_EVERY * max(1, len(killed_parts))
    summary["duplicates_allowed"] = killed_uncommitted
    if duplicates > killed_uncommitted:
        problems.append(f"{duplicates} duplicates, more than the killed member's uncommitted {killed_uncommitted}")
        summary["problems"] = problems[:20]
    print(json.dumps(summary))
    sys.exit(1 if problems else 0)


def failover(bootstrap, topic, partitions, workdir):
    """Two confluent-kafka members consume while the coordinator (the metadata leader) is
    killed: the test harness kills it when WORKDIR/kill-leader appears and answers with
    WORKDIR/leader-killed. The members find the new coordinator and go on; nothing is skipped."""
    partitions = int(partitions)
    events = os.path.join(workdir, "events.jsonl")
    open(events, "w").close()
    me = os.path.abspath(__file__)
    t0 = time.time()
    produce(bootstrap, topic, 0, 1500)
    members = [subprocess.Popen([sys.executable, me, "member", "confluent", bootstrap, topic, GROUP, events])
               for _ in range(2)]
    wait_for(events, "two members to consume", lambda evs: len({e["m"] for e in evs if e["ev"] == "rec"}) >= 2)
    open(os.path.join(workdir, "kill-leader"), "w").close()
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(workdir, "leader-killed")):
        if time.time() > deadline:
            raise SystemExit("the harness never killed the leader")
        time.sleep(0.1)
    killed_at = time.time()
    produce(bootstrap, topic, 1500, 1500)
    ends, _ = end_offsets(bootstrap, topic, partitions)

    def drained(evs):
        last = {}
        for e in evs:
            if e["ev"] == "rec":
                last[e["p"]] = max(last.get(e["p"], -1), e["o"])
        return all(last.get(p, -1) + 1 >= ends[p] for p in range(partitions))

    wait_for(events, "the members to read to the end after the failover", drained, timeout_s=90)
    drained_s = time.time() - killed_at
    open(events + ".stopall", "w").close()
    for m in members:
        m.wait(timeout=30)
    committed = committed_of(bootstrap, topic, partitions, GROUP)
    evs = read_events(events)
    problems, duplicates = analyze(evs, ends, committed, partitions)
    summary = {
        "records": sum(ends.values()),
        "delivered": sum(e["ev"] == "rec" for e in evs),
        "duplicates": duplicates,
        "assignments": sum(e["ev"] == "assign" for e in evs),
        "drained_after_kill_s": round(drained_s, 2),
        "seconds": round(time.time() - t0, 1),
        "problems": problems[:20],
    }
    print(json.dumps(summary))
    sys.exit(1 if problems else 0)


def aiokafka_group(bootstrap, topic):
    import asyncio
    from aiokafka import AIOKafkaConsumer

    async def read_all():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="aiokafka-group",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        n = 0
        try:
            idle = 0
            while idle < 3:
                batch = await c.getmany(timeout_ms=1000)
                got = sum(len(v) for v in batch.values())
                n += got
                idle = 0 if got else idle + 1
            await c.commit()
        finally:
            await c.stop()
        return n

    first = asyncio.run(read_all())
    second = asyncio.run(read_all())
    print(json.dumps({"first": first, "second": second}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "rebalance":
        rebalance(*sys.argv[2:6])
    elif cmd == "member":
        kind, bootstrap, topic, group, events = sys.argv[2:7]
        (member_confluent if kind == "confluent" else member_kafka_python)(bootstrap, topic, group, events)
    elif cmd == "failover":
        failover(*sys.argv[2:6])
    elif cmd == "aiokafka":
        aiokafka_group(*sys.argv[2:4])
    else:
        raise SystemExit(__doc__)
