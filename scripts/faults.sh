#!/usr/bin/env bash
# `make load` / `make faults` (issue 16 §2 and §1): bring the stack up like
# `make test`, build the binaries, and run
#   load    the full load test (200 sessions, 20 enrollments, 50 PIN changes
#           through agent players on private pcscd readers);
#   faults  every cell of the fault matrix (docs/reliability.md).
# `make test` runs a slice of each (the tests not marked #[ignore]).
# Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?usage: scripts/faults.sh load|faults [nextest args]}
shift
case "$mode" in
  load) filter='binary(e2e) & test(/^load::full_load$/)' ;;  # the slice runs in make test
  faults) filter='binary(card) & test(/^fault_matrix::/)' ;;
  *) echo "faults.sh: unknown mode $mode (load or faults)" >&2; exit 2 ;;
esac

STATE=${STACK_DIR:-.stack}
export BAO_PORT=${TEST_BAO_PORT:-18200}

scripts/install-deps.sh
scripts/stack.sh up "$STATE"
trap 'scripts/stack.sh down "$STATE"' EXIT
# shellcheck disable=SC1091
. "$STATE/env"

cargo build --workspace --bins --locked
KLEIDIA_OPENBAO_ADDR=$BAO_ADDR target/debug/kleidia bootstrap >/dev/null

cargo nextest run --workspace --locked --no-fail-fast --run-ignored all -E "$filter" "$@"
