#!/usr/bin/env bash
# `make ha-test`: failover under load on the HA stack (docs/ha.md). The test
# (tests/tests/card/ha_failover.rs) starts its own stack with scripts/ha.sh on
# ports 18430..18450 and a fresh database; this script brings up what it
# needs around it (PostgreSQL, pcscd with the vpcd readers) like `make test`.
# `make test` runs it too (scripts/test.sh sets HA_TEST=1); a bare
# `cargo nextest run` skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${STACK_DIR:-.stack}
export BAO_PORT=${TEST_BAO_PORT:-18200}

scripts/install-deps.sh
scripts/stack.sh up "$STATE"
trap 'scripts/stack.sh down "$STATE"' EXIT
# shellcheck disable=SC1091
. "$STATE/env"

cargo build --workspace --bins --locked
export HA_TEST=1
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-capture -E 'binary(card) & test(ha_failover)' "$@"
else
  cargo test --locked -p kleidia-tests --test card ha_failover -- --nocapture "$@"
fi
echo "ha-test: figures in target/bench/ha-failover.md"
