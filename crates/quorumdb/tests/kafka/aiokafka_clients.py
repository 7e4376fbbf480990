"""aiokafka against a QuorumDB cluster (run by tests/kafka.rs).

argv: BOOTSTRAP (comma-separated host:port). Exits non-zero with a message on any failure.
Proves: an aiokafka idempotent producer (acks=all, gzip, batched) gets dense offsets for every
record of 3 partitions, and aiokafka consumers that assign() one partition each and seek()
(to the beginning, then into the middle) read every record back once, in produce order.
"""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC = "aio-events"
PARTITIONS = 3
N = 1500
# Every await below is bounded: a broker that stops answering fails the test, never hangs it.
STEP_TIMEOUT_S = 30


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


async def produce(bootstrap):
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="gzip",
        linger_ms=5,
        request_timeout_ms=15000,
    )
    await asyncio.wait_for(producer.start(), STEP_TIMEOUT_S)
    try:
        sent = []
        for i in range(N):
            # send() only queues the record; its future resolves with the acknowledged offset.
            fut = await producer.send(TOPIC, key=b"k%d" % i, value=b"v%d" % i, partition=i % PARTITIONS)
            sent.append(fut)
        acked = await asyncio.wait_for(asyncio.gather(*sent), STEP_TIMEOUT_S * 2)
    finally:
        await asyncio.wait_for(producer.stop(), STEP_TIMEOUT_S)
    per_partition = {p: [] for p in range(PARTITIONS)}
    for i, meta in enumerate(acked):
        if meta.partition != i % PARTITIONS:
            fail(f"record {i} went to partition {meta.partition}")
        per_partition[meta.partition].append(meta.offset)
    for p, offsets in per_partition.items():
        # One producer, one partition, in order: the acknowledged offsets are 0, 1, 2, ...
        if offsets != list(range(len(offsets))):
            fail(f"partition {p}: acknowledged offsets are not dense and in order: {offsets[:10]}...")
    return {p: len(o) for p, o in per_partition.items()}


async def read_partition(bootstrap, part, start, count):
    """`count` records of partition `part` from offset `start`, via assign() and seek()."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=15000,
    )
    await asyncio.wait_for(consumer.start(), STEP_TIMEOUT_S)
    try:
        tp = TopicPartition(TOPIC, part)
        consumer.assign([tp])
        if start == 0:
            await asyncio.wait_for(consumer.seek_to_beginning(tp), STEP_TIMEOUT_S)
        else:
            consumer.seek(tp, start)
        end = (await asyncio.wait_for(consumer.end_offsets([tp]), STEP_TIMEOUT_S))[tp]
        got = []
        while len(got) < count:
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), STEP_TIMEOUT_S)
            for m in batch.get(tp, []):
                got.append((m.offset, m.key, m.value))
            if not batch and len(got) < count and await consumer.position(tp) >= end:
                fail(f"partition {part}: position reached the end {end} after {len(got)} of {count}")
        return got
    finally:
        await asyncio.wait_for(consumer.stop(), STEP_TIMEOUT_S)


async def main(bootstrap):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await asyncio.wait_for(admin.start(), STEP_TIMEOUT_S)
    try:
        created = await asyncio.wait_for(
            admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3)]),
            STEP_TIMEOUT_S,
        )
        # aiokafka returns the response as is: per-topic error codes, nothing raised.
        errors = [(t[0], t[1]) for t in created.topic_errors if t[1] != 0]
        if errors:
            fail(f"CreateTopics refused: {errors}")
    finally:
        await asyncio.wait_for(admin.close(), STEP_TIMEOUT_S)
    counts = await produce(bootstrap)
    for part in range(PARTITIONS):
        want = [(o, b"k%d" % (o * PARTITIONS + part), b"v%d" % (o * PARTITIONS + part)) for o in range(counts[part])]
        got = await read_partition(bootstrap, part, 0, counts[part])
        if got != want:
            fail(f"partition {part}: read {len(got)} records, not the {len(want)} produced in order")
        # A seek into the middle starts exactly there.
        mid = counts[part] // 2
        got = await read_partition(bootstrap, part, mid, counts[part] - mid)
        if got != want[mid:]:
            fail(f"partition {part}: after seek({mid}) read {got[:2]}..., not from offset {mid}")
    print(f"aiokafka: {N} produced idempotently and read back in order per partition, seek() honoured")
    print("OK")


asyncio.run(main(sys.argv[1]))
