"""An idempotent confluent-kafka producer through kill -9 of a node (run by tests/kafka.rs).

argv: BOOTSTRAP N RATE. Creates topic "kill-events" (3 partitions), produces values 0..N-1
(key = value, partition = value mod 3) with acks=all and enable.idempotence at about RATE
records/s, printing "acked K" after every 100 acknowledgements so the test can kill and restart
a node meanwhile. Then reads every partition from the beginning with assign() and checks: every
record acknowledged, none delivered twice, none missing, offsets dense from 0, and per
partition the values in produce order. Prints OK, or FAIL and exits non-zero.
"""
import logging
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, N, RATE = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
TOPIC, PARTITIONS = "kill-events", 3
# librdkafka retries a request whose broker died; it must give up on none of them before this.
DELIVERY_TIMEOUT_MS = 60000


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS)])[TOPIC].result(timeout=30)

acked = {}
errors = []


def on_delivery(err, msg):
    if err:
        errors.append(str(err))
        return
    v = int(msg.value())
    if v in acked:
        errors.append(f"value {v} acknowledged twice")
    acked[v] = (msg.partition(), msg.offset())
    if len(acked) % 100 == 0:
        print(f"acked {len(acked)}", flush=True)


debug = {}
if os.environ.get("IDEMPOTENT_KILL_LOG"):
    # Diagnosis aid: librdkafka's idempotence and protocol log to a file.
    log = logging.getLogger("rdkafka")
    log.addHandler(logging.FileHandler(os.environ["IDEMPOTENT_KILL_LOG"]))
    log.setLevel(logging.DEBUG)
    debug = {"debug": "eos,msg,protocol,broker", "logger": log}
producer = Producer(
    {
        **debug,
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        # A killed broker's socket is noticed by the OS at once on loopback; refresh quickly.
        "topic.metadata.refresh.interval.ms": 1000,
        "reconnect.backoff.max.ms": 500,
    }
)
started = time.monotonic()
for i in range(N):
    # Paced, so that the production spans the kill and the restart.
    lag = started + i / RATE - time.monotonic()
    if lag > 0:
        producer.poll(lag)
    while True:
        try:
            producer.produce(TOPIC, key=str(i), value=str(i), partition=i % PARTITIONS, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)
left = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 10)
if left:
    fail(f"{left} records still unacknowledged")
if errors:
    fail(f"delivery errors: {errors[:5]} ({len(errors)} in all)")
if len(acked) != N:
    fail(f"{len(acked)} of {N} acknowledged")
print(f"produced {N} in {time.monotonic() - started:.1f} s", flush=True)

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
for part in range(PARTITIONS):
    low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, part), timeout=10)
    want = list(range(part, N, PARTITIONS))
    if (low, high) != (0, len(want)):
        fail(f"partition {part}: watermarks {low}..{high}, expected 0..{len(want)} (a duplicate or a loss)")
    consumer.assign([TopicPartition(TOPIC, part, 0)])
    got = []
    while len(got) < high:
        m = consumer.poll(10)
        if m is None:
            fail(f"partition {part}: no record within 10 s at {len(got)} of {high}")
        if m.error():
            raise KafkaException(m.error())
        if m.offset() != len(got):
            fail(f"partition {part}: offset {m.offset()} where {len(got)} was next (a gap)")
        v = int(m.value())
        if m.key() != m.value() or acked.get(v) != (part, m.offset()):
            fail(f"partition {part} offset {m.offset()}: value {v}, acknowledged as {acked.get(v)}")
        got.append(v)
    if got != want:
        fail(f"partition {part}: values out of produce order")
consumer.close()
print(f"consumed {N}: every acknowledged record once, dense offsets, produce order", flush=True)
print("OK", flush=True)
