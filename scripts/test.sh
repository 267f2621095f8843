#!/usr/bin/env bash
# `make test`: install what is missing, bring the stack up, build every binary,
# run the whole workspace suite, and tear down what this run started.
# Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${STACK_DIR:-.stack}
# Tests use their own OpenBao port so a running `make demo` (8200) is left alone.
export BAO_PORT=${TEST_BAO_PORT:-18200}

scripts/install-deps.sh
scripts/stack.sh up "$STATE"
trap 'scripts/stack.sh down "$STATE"' EXIT
# shellcheck disable=SC1091
. "$STATE/env"

# Databases left behind by an interrupted earlier run (tests create kt_<uuid>).
# Without FORCE: a database another run is using right now stays.
psql "$DATABASE_URL" -qAt -c "select datname from pg_database where datname like 'kt\_%'" 2>/dev/null |
  while read -r db; do psql "$DATABASE_URL" -qc "drop database if exists \"$db\"" >/dev/null 2>&1 || true; done

cargo build --workspace --bins --locked

# The Kubernetes manifests (render, schemas, checkov, invariants), then the
# images built from the debug binaries just compiled (no release build: it
# would cost CI minutes) and started the way the cluster would.
scripts/kube-validate.sh
KLEIDIA_IMAGE_PROFILE=${KLEIDIA_IMAGE_PROFILE:-debug} scripts/image-test.sh

# The shared OpenBao gets Kleidia's layout once; tests that need a pristine or
# stoppable server start their own.
KLEIDIA_OPENBAO_ADDR=$BAO_ADDR target/debug/kleidia bootstrap >/dev/null

# The HA failover test (tests/tests/card/ha_failover.rs, docs/ha.md: about
# 2 minutes) is part of make test; a bare `cargo nextest run` skips it.
export HA_TEST=${HA_TEST:-1}

rc=0
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@" || rc=$?
else
  echo "test: cargo-nextest not found; falling back to cargo test (serial)" >&2
  cargo test --workspace --locked --no-fail-fast -- --test-threads=1 "$@" || rc=$?
fi

# A seconds-long smoke of `make bench` (tiny fleet, debug binaries, this
# stack) so the bench cannot rot; its report goes to target/bench/smoke/.
if [ "$#" -eq 0 ]; then
  scripts/bench.sh --smoke >target/bench-smoke.log 2>&1 || {
    echo "test: the bench smoke failed (target/bench-smoke.log)" >&2
    tail -20 target/bench-smoke.log >&2
    rc=1
  }
fi

# Yubico's own PIV device tests against the software key, one personality
# (about 10 minutes; `make yubico-suite` runs both). Not with a test filter.
if [ "$#" -eq 0 ]; then
  YUBICO_SUITE_NO_BUILD=1 scripts/yubico-suite.sh "${YUBICO_SUITE_FIRMWARE:-5.7.1}" || rc=1
fi
exit "$rc"
