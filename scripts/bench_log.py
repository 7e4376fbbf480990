"""The log benchmark's load generator (confluent-kafka); scripts/bench-log.sh drives it.

  bench_log.py produce BOOTSTRAP TOPIC SIZE RECORDS
      as fast as the producer goes: RECORDS records of SIZE bytes, acks=all, idempotent;
      throughput from the first produce() to the last delivery report.
  bench_log.py latency BOOTSTRAP TOPIC SIZE RATE SECONDS
      RATE records/s for SECONDS, paced every millisecond; per-record delivery latency
      (librdkafka's own produce()-to-delivery-report time, Message.latency()).
  bench_log.py consume BOOTSTRAP TOPIC RECORDS
      one consumer, assign() to partition 0 from the beginning, until RECORDS are read; time to
      the first record and throughput.

Prints one JSON object per run on the last line (the shell script collects them). Every run
is bounded: a produce or consume that stalls for STALL_S seconds fails instead of hanging.
"""
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

STALL_S = 30

# acks=all with idempotence, as the target states. The rest is librdkafka's batching:
# up to 10 000 records or 1 MB per batch (the broker's batch limit is 1 MiB), a 5 ms linger,
# and room for 500 000 queued records so that produce() rarely meets a full queue.
PRODUCER = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "batch.size": 1000000,
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 1048576,
    "message.timeout.ms": STALL_S * 1000,
}


def fail(msg):
    print(json.dumps({"error": msg}), flush=True)
    sys.exit(1)


def producer(bootstrap, extra=None):
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER, **(extra or {})})


def produce(bootstrap, topic, size, records):
    p = producer(bootstrap)
    value = b"x" * size
    state = {"acked": 0, "errors": 0, "last": None, "first_error": None}

    def report(err, _msg):
        if err:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or str(err)
        else:
            state["acked"] += 1
        state["last"] = time.monotonic()

    # Warm up: topic metadata, producer id and connections are not part of the figure.
    p.produce(topic, value=value, partition=0, on_delivery=report)
    if p.flush(STALL_S) != 0:
        fail("the warm-up record was not acknowledged")
    state["acked"] = 0
    started = time.monotonic()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, value=value, partition=0, on_delivery=report)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    if p.flush(STALL_S + 5) != 0:
        fail(f"records unacknowledged after {STALL_S} s")
    if state["errors"]:
        fail(f"{state['errors']} delivery errors, first: {state['first_error']}")
    took = state["last"] - started
    return {
        "mode": "produce",
        "size": size,
        "records": records,
        "seconds": round(took, 3),
        "records_per_s": round(records / took),
        "mb_per_s": round(records * size / took / 1e6, 2),
    }


def latency(bootstrap, topic, size, rate, seconds):
    p = producer(bootstrap)
    value = b"x" * size
    lat = []
    errors = []

    def report(err, msg):
        if err:
            errors.append(str(err))
        else:
            lat.append(msg.latency())

    p.produce(topic, value=value, partition=0, on_delivery=report)
    p.flush(STALL_S)
    lat.clear()
    total = int(rate * seconds)
    started = time.monotonic()
    sent = 0
    while sent < total:
        # Every millisecond, the records due by now: a steady open-loop rate, not a burst.
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            try:
                p.produce(topic, value=value, partition=0, on_delivery=report)
                sent += 1
            except BufferError:
                p.poll(0.001)
        p.poll(0.001)
    if p.flush(STALL_S) != 0 or errors:
        fail(f"unacknowledged records or errors: {errors[:3]}")
    took = time.monotonic() - started
    lat.sort()

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)

    return {
        "mode": "latency",
        "size": size,
        "target_rate": rate,
        "achieved_rate": round(len(lat) / took),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": round(lat[-1] * 1000, 2),
    }


def consume(bootstrap, topic, records):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # No group APIs yet (docs/log.md): assign(), never subscribe(); the id is unused.
            "group.id": "bench-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 8388608,
            "queued.max.messages.kbytes": 262144,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by default) whenever
            # its local queue holds queued.min.messages (100 000): a consumer that drains
            # faster than that then idles most of the time, waiting for the pause to end.
            "queued.min.messages": 1000000,
            "fetch.queue.backoff.ms": 5,
        }
    )
    started = time.monotonic()
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    first = None
    last_progress = started
    while got < records:
        msgs = c.consume(num_messages=10000, timeout=1.0)
        now = time.monotonic()
        for m in msgs:
            if m.error():
                fail(str(m.error()))
        if msgs:
            first = first or now
            got += len(msgs)
            last_progress = now
        elif now - last_progress > STALL_S:
            fail(f"no record for {STALL_S} s at {got} of {records}")
    took = time.monotonic() - started
    c.close()
    return {
        "mode": "consume",
        "records": got,
        "first_record_s": round(first - started, 3),
        "seconds": round(took, 3),
        "records_per_s": round(got / took),
    }


def main(argv):
    mode, bootstrap, topic = argv[1], argv[2], argv[3]
    if mode == "produce":
        r = produce(bootstrap, topic, int(argv[4]), int(argv[5]))
    elif mode == "latency":
        r = latency(bootstrap, topic, int(argv[4]), float(argv[5]), float(argv[6]))
    elif mode == "consume":
        r = consume(bootstrap, topic, int(argv[4]))
    else:
        fail(f"unknown mode {mode}")
    print(json.dumps(r), flush=True)


main(sys.argv)
