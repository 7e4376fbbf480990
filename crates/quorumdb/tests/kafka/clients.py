"""Real Python Kafka clients against a QuorumDB cluster (run by tests/kafka.rs).

argv: BOOTSTRAP (comma-separated host:port). Exits non-zero with a message on any failure.
Proves: confluent-kafka (librdkafka) creates a topic with the admin client, produces with
idempotence and zstd to 3 partitions, and reads every acknowledged record back exactly once
with dense offsets; kafka-python produces and consumes through another broker.
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
N = 2000


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": bootstrap})
for name, fut in admin.create_topics(
    [NewTopic("py-events", num_partitions=3, replication_factor=3, config={"retention.ms": "3600000"})]
).items():
    fut.result(timeout=30)
bad = admin.create_topics([NewTopic("py-bad", num_partitions=1, config={"cleanup.policy": "compact"})])
try:
    bad["py-bad"].result(timeout=30)
    fail("an unsupported topic config was accepted")
except Exception as e:  # noqa: BLE001 - the client raises KafkaException
    if "INVALID_CONFIG" not in str(e) and "InvalidConfig" not in str(e) and "not supported" not in str(e):
        fail(f"unexpected error for an unsupported config: {e}")

acked = {}
errors = []


def on_delivery(err, msg):
    if err:
        errors.append(str(err))
    else:
        acked[msg.key().decode()] = (msg.partition(), msg.offset())


producer = Producer(
    {"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "zstd", "linger.ms": 5}
)
for i in range(N):
    producer.produce("py-events", key=f"k{i}", value=f"value-{i}", on_delivery=on_delivery)
    producer.poll(0)
if producer.flush(60) != 0:
    fail("records left unsent after 60 s")
if errors or len(acked) != N:
    fail(f"{len(acked)} of {N} acknowledged, errors: {errors[:3]}")

seen = {}
for part in range(3):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition("py-events", part), timeout=10)
    consumer.assign([TopicPartition("py-events", part, 0)])
    offsets = []
    while len(offsets) < high:
        m = consumer.poll(10)
        if m is None:
            fail(f"partition {part}: no record after 10 s at {len(offsets)} of {high}")
        if m.error():
            fail(f"partition {part}: {m.error()}")
        offsets.append(m.offset())
        key = m.key().decode()
        if key in seen:
            fail(f"{key} delivered twice")
        seen[key] = (part, m.offset())
        if m.value().decode() != "value-" + key[1:]:
            fail(f"{key} has value {m.value()!r}")
    consumer.close()
    if offsets != list(range(low, high)) or low != 0:
        fail(f"partition {part}: offsets are not dense 0..{high}")
if seen != acked:
    fail("consumed records differ from the acknowledged ones")
print(f"confluent-kafka: {N} acknowledged, {len(seen)} consumed once each, offsets dense")

from kafka import KafkaConsumer, KafkaProducer  # noqa: E402

second = bootstrap.split(",")[-1]
kp = KafkaProducer(bootstrap_servers=second, acks="all", compression_type="gzip")
futures = [kp.send("kp-events", key=b"k%d" % i, value=b"v%d" % i) for i in range(300)]
meta = [f.get(timeout=30) for f in futures]
kp.close()
if sorted(m.offset for m in meta) != list(range(300)):
    fail("kafka-python: offsets are not dense")
kc = KafkaConsumer(
    "kp-events", bootstrap_servers=second, auto_offset_reset="earliest", consumer_timeout_ms=10000, group_id=None
)
values = [m.value for m in kc]
kc.close()
if values != [b"v%d" % i for i in range(300)]:
    fail(f"kafka-python consumed {len(values)} records, not the 300 produced in order")
print("kafka-python: 300 produced and consumed in order")
print("OK")
