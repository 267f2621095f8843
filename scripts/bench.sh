#!/usr/bin/env bash
# `make bench`: throughput and memory of the release server on this machine,
# against real PostgreSQL and OpenBao, with a fleet of 100,000 devices.
# Measures; asserts nothing. Results go to stdout and target/bench/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${STACK_DIR:-.stack-bench}
export BAO_PORT=${BENCH_BAO_PORT:-18300}
PORT=${BENCH_PORT:-18080}
DURATION=${BENCH_SECONDS:-10}
DEVICES=${BENCH_DEVICES:-100000}
OUT=target/bench
mkdir -p "$OUT"

scripts/install-deps.sh
if ! command -v wrk >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

scripts/stack.sh up "$STATE"
app_pid=
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  scripts/stack.sh down "$STATE"
}
trap cleanup EXIT
# shellcheck disable=SC1091
. "$STATE/env"

cargo build --release --locked -p kleidia --bins
BIN=target/release/kleidia

DB=kleidia_bench
PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${DATABASE_URL%/*}/$DB"

export KLEIDIA_DATABASE_URL=$DB_URL KLEIDIA_OPENBAO_ADDR=$BAO_ADDR KLEIDIA_OPENBAO_TOKEN=$BAO_TOKEN
export KLEIDIA_SERVER_BIND=127.0.0.1:$PORT KLEIDIA_SERVER_PUBLIC_URL=http://127.0.0.1:$PORT
export KLEIDIA_LOG_LEVEL=warn KLEIDIA_LICENSE_URL=http://127.0.0.1:9
"$BIN" bootstrap >/dev/null
"$BIN" migrate >/dev/null
echo "bench-admin-password-1" | "$BIN" user create --username admin --role admin --password-stdin >/dev/null

psql "$DB_URL" -qAt -c "
  INSERT INTO devices (serial, firmware, state, secrets_version)
  SELECT 10000000 + g, CASE WHEN g % 3 = 0 THEN '5.7.1' ELSE '5.4.3' END,
         (ARRAY['registered','active','active','active','suspended','lost','retired'])[1 + g % 7],
         CASE WHEN g % 5 = 0 THEN NULL ELSE 1 END
  FROM generate_series(1, $DEVICES) g" >/dev/null

"$BIN" serve >"$OUT/server.log" 2>&1 &
app_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
  -d '{"username":"admin","password":"bench-admin-password-1"}' \
  "http://127.0.0.1:$PORT/api/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

rss() { awk '/VmRSS/ {print $2}' "/proc/$app_pid/status"; }

: >"$OUT/results.txt"
run() { # name path [auth]
  local name=$1 path=$2 auth=${3:-}
  local args=(-t2 -c16 -d"${DURATION}s" --latency)
  [ -n "$auth" ] && args+=(-H "Authorization: Bearer $TOKEN")
  local out
  out=$(wrk "${args[@]}" "http://127.0.0.1:$PORT$path")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  printf '%-34s %10s req/s   p99 %8s   RSS %6s KiB\n' "$name" "$rps" "$p99" "$(rss)" | tee -a "$OUT/results.txt"
}

echo "Kleidia bench: $(nproc) cores, $DEVICES devices, ${DURATION}s per run, 16 connections" | tee -a "$OUT/results.txt"
echo "idle RSS: $(rss) KiB" | tee -a "$OUT/results.txt"
run "GET /healthz" /healthz
run "GET /login (Askama page)" /login
run "GET /api/devices (first page)" "/api/devices?limit=50" auth
run "GET /api/devices (deep keyset page)" "/api/devices?limit=50&after=10090000" auth
run "GET /api/devices?state=lost" "/api/devices?state=lost&limit=50" auth
run "GET /api/devices?q=1009 (search)" "/api/devices?q=1009&limit=50" auth
run "GET /api/devices?factory=true" "/api/devices?factory=true&limit=50" auth
run "GET /pki/ca_chain (cached)" /pki/ca_chain
run "GET /api/agent/ticket-key" /api/agent/ticket-key

# Sign-ins: 200 connections posting the right password at once. Argon2id
# (19 MiB, t=2) bounds the rate; the bounded hash queue
# (auth.hash_concurrency + auth.hash_queue) answers the excess with 503,
# so memory stays flat. Peak RSS is the kernel's high-water mark (VmHWM).
cat >"$OUT/login.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"admin","password":"bench-admin-password-1"}'
wrk.headers["Content-Type"] = "application/json"
LUA
out=$(wrk -t2 -c200 -d"${DURATION}s" --latency -s "$OUT/login.lua" "http://127.0.0.1:$PORT/api/auth/login")
total=$(awk '/requests in/ {print $1}' <<<"$out")
refused=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
refused=${refused:-0}
p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
printf '%-34s %10s logins/s   refused (503) %6s   p99 %8s   peak RSS %6s KiB\n' \
  "POST /api/auth/login x200 parallel" \
  "$(python3 -c "print(round(($total - $refused) / $DURATION, 1))")" "$refused" "$p99" \
  "$(awk '/VmHWM/ {print $2}' "/proc/$app_pid/status")" | tee -a "$OUT/results.txt"
# The presence step (docs/security.md): challenge, proof verify, per operation.
python3 -c 'import cryptography' 2>/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-cryptography >/dev/null
python3 scripts/bench_presence.py "http://127.0.0.1:$PORT" admin bench-admin-password-1 \
  "$DB_URL" "${BENCH_PRESENCE_OPS:-200}" | tee -a "$OUT/results.txt"
echo "results in $OUT/results.txt"
