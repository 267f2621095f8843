#!/usr/bin/env bash
# `make yubico-suite`: Yubico's own PIV device tests (tests/device/test_piv.py
# and tests/device/cli/piv/ of the yubikey-manager release pinned below, run
# unmodified) against the software YubiKey, once per firmware personality.
#
#   scripts/yubico-suite.sh [FIRMWARE...]     default: 5.4.3 5.7.1
#
# The tests are destructive (they reset PIV before each test): they only ever
# see a fresh software key in a vpcd reader, never a real YubiKey. ykman and
# pytest go into a venv under target/; the tests come from the release's
# sdist on PyPI (checked against its SHA-256). pcscd with the vpcd reader must
# run; if it does not, the stack is brought up for this run and torn down after.
# Extra pytest arguments: YUBICO_SUITE_PYTEST_ARGS (e.g. "-k test_import").
# Fails when a test fails or a test is skipped for a reason not listed in
# scripts/yubico-suite-skips.txt for that personality.
set -euo pipefail
cd "$(dirname "$0")/.."

YKMAN_VERSION=5.9.1
YKMAN_SDIST_SHA256=83bda2a4bbb6a93bc07e5de73a0f30e5a8b811c85a9116aaca6dd3eed8abb0eb
DIR=${YUBICO_SUITE_DIR:-target/yubico-suite}
READER_INDEX=${YUBICO_SUITE_READER:-0}
READER="Virtual PCD 00 0$READER_INDEX"
if [ "$#" -gt 0 ]; then PERSONALITIES=("$@"); else PERSONALITIES=(5.4.3 5.7.1); fi

log() { echo "yubico-suite: $*"; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
VENV=$DIR/venv
REQS=scripts/yubico-suite-requirements.txt

# ------------------------------------------------------------------ ykman + pytest
if ! cmp -s "$REQS" "$VENV/requirements.installed"; then
  log "installing yubikey-manager $YKMAN_VERSION and pytest into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQS"
  "$VENV/bin/pip" check >/dev/null
  cp "$REQS" "$VENV/requirements.installed"
fi

# ------------------------------------------------------------------ the tests
TESTS=$DIR/yubikey-manager-$YKMAN_VERSION
if [ ! -f "$TESTS/tests/device/test_piv.py" ]; then
  log "fetching the yubikey-manager $YKMAN_VERSION sdist for its tests"
  rm -rf "$DIR/sdist" "$TESTS"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: "yubikey-manager==$YKMAN_VERSION" -d "$DIR/sdist"
  sdist=$DIR/sdist/yubikey_manager-$YKMAN_VERSION.tar.gz
  echo "$YKMAN_SDIST_SHA256  $sdist" | sha256sum --check --quiet
  mkdir -p "$TESTS"
  # Only the tests (BSD-2-Clause, COPYING): the library itself comes from the venv.
  tar xzf "$sdist" -C "$TESTS" --strip-components=1 \
    "yubikey_manager-$YKMAN_VERSION/tests" "yubikey_manager-$YKMAN_VERSION/COPYING"
  rm -rf "$DIR/sdist"
fi

# ------------------------------------------------------------------ pcscd + the key
if ! pgrep -x pcscd >/dev/null 2>&1; then
  STATE=${STACK_DIR:-.stack}
  scripts/install-deps.sh
  scripts/stack.sh up "$STATE"
  trap 'scripts/stack.sh down "$STATE"' EXIT
fi
# YUBICO_SUITE_NO_BUILD=1: the caller built the binaries (scripts/test.sh does).
[ -n "${YUBICO_SUITE_NO_BUILD:-}" ] || cargo build --workspace --bins --locked
KEY_BIN=$PWD/target/debug/kleidia-virtual-yubikey

# Expected skip reasons: "FIRMWARE<TAB>pytest's reason<TAB>why the personality lacks it".
SKIPS=scripts/yubico-suite-skips.txt

run_one() {
  local fw=$1 serial=$2
  local run=$DIR/run-$fw
  rm -rf "$run"
  mkdir -p "$run"
  # The test harness (tests/src/card.rs) holds the same lock while it uses the readers.
  exec 9>"${TMPDIR:-/tmp}/kleidia-vpcd-readers.lock"
  flock 9
  "$KEY_BIN" --serial "$serial" --firmware "$fw" --reader "$READER_INDEX" \
    --state "$run/yubikey.json" 2>"$run/yubikey.log" &
  local key=$!
  local up=
  for _ in $(seq 50); do
    if "$VENV/bin/ykman" --reader "$READER" info >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
  done
  if [ -z "$up" ]; then
    kill "$key" 2>/dev/null || true
    log "the software key did not show up in $READER"; cat "$run/yubikey.log" >&2
    return 1
  fi
  log "firmware $fw: ykman $YKMAN_VERSION device tests on serial $serial in \"$READER\""
  local rc=0
  # shellcheck disable=SC2086
  (cd "$TESTS" && "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs \
    --junitxml="$run/junit.xml" --device "$serial" --reader "$READER" \
    ${YUBICO_SUITE_PYTEST_ARGS:-} tests/device/test_piv.py tests/device/cli/piv) \
    | tee "$run/pytest.log" || rc=$?
  kill "$key" 2>/dev/null || true
  wait "$key" 2>/dev/null || true
  flock -u 9
  log "firmware $fw: $(tail -n 1 "$run/pytest.log" | tr -d '=') (pytest exit $rc)"
  [ "$rc" -eq 0 ] || return 1
  # Every skip must be one the personality explains.
  local unexpected
  unexpected=$(grep -E '^SKIPPED \[' "$run/pytest.log" | sed -E 's/^SKIPPED \[[0-9]+\] [^ ]+: //' | sort -u |
    while IFS= read -r reason; do
      grep -qF "$fw	$reason	" "$SKIPS" || echo "$reason"
    done)
  if [ -n "$unexpected" ]; then
    log "firmware $fw: skips not explained in $SKIPS:"; echo "$unexpected" >&2
    return 1
  fi
}

failed=()
for fw in "${PERSONALITIES[@]}"; do
  serial=$((30000000 + ${fw//./}))
  run_one "$fw" "$serial" || failed+=("$fw")
done
if [ "${#failed[@]}" -gt 0 ]; then
  log "FAILED for firmware ${failed[*]} (logs in $DIR/run-*)"
  exit 1
fi
log "passed for firmware ${PERSONALITIES[*]}"
