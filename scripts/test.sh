#!/usr/bin/env bash
# The test suite, on a fresh machine: installs the third-party clients the Kafka tests drive
# (kcat from Debian; confluent-kafka, kafka-python and aiokafka in a virtualenv under target/)
# and PostgreSQL for the sink tests (Debian's postgresql; each test starts a private server),
# then runs every test, then each fuzz target for a bounded time (scripts/fuzz.sh). The Python clients are pinned; the venv is (re)installed whenever any
# of them fails to import, so adding a pin here reaches machines with an older venv. README's
# "Run the tests" and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
  echo "== installing kcat (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat
fi

# The sink tests run initdb/pg_ctl themselves (crates/quorumdb/src/pg.rs); they fail, not
# skip, without them. Debian puts the binaries under /usr/lib/postgresql/<version>/bin.
pg_bindir() {
  local d
  d="$(pg_config --bindir 2>/dev/null || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
  done
  d="$(command -v initdb 2>/dev/null || true)"
  if [ -n "$d" ]; then dirname "$d"; fi
}
if [ -z "$(pg_bindir)" ]; then
  echo "== installing PostgreSQL (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
QUORUMDB_PG_BINDIR="$(pg_bindir)"
if [ -z "$QUORUMDB_PG_BINDIR" ]; then
  echo "error: PostgreSQL's initdb is still not found after installing postgresql" >&2
  exit 1
fi
export QUORUMDB_PG_BINDIR

VENV=target/test-venv
if ! "$VENV/bin/python" -c "import confluent_kafka, kafka, aiokafka" >/dev/null 2>&1; then
  echo "== installing confluent-kafka, kafka-python and aiokafka (virtualenv $VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "confluent-kafka==2.16.2" "kafka-python==3.0.12" "aiokafka==0.14.0"
fi
export QUORUMDB_TEST_PYTHON="$PWD/$VENV/bin/python"

cargo test --workspace --locked "$@"

# The fuzz targets, briefly (QUORUMDB_FUZZ_SECONDS each, default 15): a crash fails the run.
scripts/fuzz.sh "${QUORUMDB_FUZZ_SECONDS:-15}"
