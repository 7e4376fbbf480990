#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (decoders that meet untrusted bytes), each for a
# bounded time: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]. Default 15 s each and every
# target; scripts/test.sh runs it so CI fuzzes on every run, and longer runs by hand use the
# same command (figures in docs/security.md). A crash leaves its input under
# fuzz/artifacts/<target>/ and fails the script; reproduce it with
#   cd fuzz && cargo fuzz run -s none --dev <target> artifacts/<target>/<file>
#
# `-s none`: the machine has only a stable toolchain, and sanitizers need nightly. Our code
# has no `unsafe`, so what the fuzzer hunts is panics, overflows (the dev build keeps overflow
# checks and debug assertions on), unbounded allocations and broken round trips.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${1:-15}"
shift || true
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi

echo "== building fuzz targets"
cargo fuzz build -s none --dev
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${SECONDS_PER_TARGET} s"
  # -rss_limit_mb: a decoder that allocates by a length it was sent, not by the bytes it
  # has, shows up as an out-of-memory crash.
  if ! cargo fuzz run -s none --dev "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>"corpus/$t.log"; then
    tail -40 "corpus/$t.log" >&2
    echo "error: fuzz target $t failed; its input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units" "corpus/$t.log" | tail -1
done
