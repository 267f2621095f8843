#!/usr/bin/env bash
# `make demo`: Kleidia on one machine with a software YubiKey plugged in.
# State lives under .demo/ (git-ignored). Runs in the foreground; Ctrl-C stops
# everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
DEMO=$root/.demo
BIN=$root/target/debug
# OpenBao also binds BAO_PORT+1 (its cluster port).
export BAO_PORT=${DEMO_BAO_PORT:-8200}
APP_URL=http://127.0.0.1:8080
LICENSE_ADDR=127.0.0.1:8090
AGENT_PORT=56123
YK_SERIAL=${DEMO_YUBIKEY_SERIAL:-12345678}

scripts/install-deps.sh
mkdir -p "$DEMO/logs"
chmod 700 "$DEMO"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  for n in kleidia kleidia-license yubikey-0 kleidia-agent; do rm -f "$DEMO/$n.pid"; done
  # The stack keeps its own PID files (bao.pid, pcscd.pid): it stops what it started.
  scripts/stack.sh down "$DEMO"
}
trap cleanup INT TERM EXIT

# start NAME LOGFILE CMD... : run in the background, remember the PID.
start() {
  local name=$1 logf=$2
  shift 2
  "$@" >"$logf" 2>&1 </dev/null &
  local pid=$!
  pids+=("$pid")
  echo "$pid" >"$DEMO/$name.pid"
}

wait_http() { # url seconds name
  for _ in $(seq 1 $(($2 * 10))); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "demo: $3 did not come up at $1; see $DEMO/logs/" >&2
  return 1
}

echo "demo: building (first run takes a few minutes)"
cargo build --workspace --bins --locked

scripts/stack.sh up "$DEMO"
# shellcheck disable=SC1091
. "$DEMO/env"

# Every demo starts from a clean slate: the OpenBao dev server keeps its
# secrets in memory only, so the database and the software YubiKey start
# over with it (an escrow that vanished would leave both meaningless).
DEMO_DB=kleidia_demo
PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -qAt -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" >/dev/null
psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $DEMO_DB" >/dev/null
# Two roles (docs/security.md, "Audit log"): the owner from the stack's
# DATABASE_URL migrates; the server runs as the runtime role, which cannot
# disable the audit log's append-only triggers.
DEMO_OWNER_URL="${DATABASE_URL%/*}/$DEMO_DB"
if [ -n "${DATABASE_RUNTIME_URL:-}" ]; then
  DEMO_DATABASE_URL="${DATABASE_RUNTIME_URL%/*}/$DEMO_DB"
else
  echo "demo: no DATABASE_RUNTIME_URL; the server runs as the owner (it will warn)" >&2
  DEMO_DATABASE_URL=$DEMO_OWNER_URL
fi
(umask 077 && echo "$DEMO_OWNER_URL" >"$DEMO/database-owner-url")
rm -rf "$DEMO/yubikey-0.json" "$DEMO/yubikey-1.json" "$DEMO/agent"

# The software YubiKey's attestation root (kept across demos) is what the
# server trusts for attestation here; in production it is Yubico's.
"$BIN/kleidia-virtual-yubikey" init-attestation-root --out "$DEMO/attestation-root.pem" >"$DEMO/attestation-roots.crt"

# The configuration `kleidia --config .demo/kleidia.toml …` uses from any terminal.
(
  umask 077
  cat >"$DEMO/kleidia.toml" <<EOF
# Written by scripts/demo.sh. Demo only: loopback, plain HTTP, OpenBao dev server.
[server]
bind = "127.0.0.1:8080"
public_url = "$APP_URL"

[database]
# The runtime role. Migrations run as the owner, whose URL is kept out of this
# file:  KLEIDIA_DATABASE_OWNER_URL_FILE=.demo/database-owner-url kleidia --config .demo/kleidia.toml migrate
url = "$DEMO_DATABASE_URL"

[openbao]
addr = "$BAO_ADDR"
# AppRole: the app logs in with the role_id and secret_id that bootstrap
# wrote, renews its token in the background and logs in again when needed.
# To bootstrap from another terminal (a new secret_id each time):
#   kleidia --config .demo/kleidia.toml bootstrap --openbao-token-file .demo/bao-token --approle-out .demo/approle
auth = "approle"
role_id_file = "$DEMO/approle/kleidia-app/role_id"
secret_id_file = "$DEMO/approle/kleidia-app/secret_id"

[license]
url = "http://$LICENSE_ADDR"

[attestation]
# The software YubiKey's test root. Production: Yubico's PIV attestation roots.
roots_file = "$DEMO/attestation-roots.crt"

[agent]
url = "http://127.0.0.1:$AGENT_PORT"
EOF
)

echo "demo: OpenBao layout"
# Bootstrap runs with the dev server's root token (and only bootstrap does):
# it lays OpenBao out and writes AppRole credentials for the app and the
# license service, each with its own policy and short-lived, renewed tokens.
KLEIDIA_OPENBAO_AUTH=token KLEIDIA_OPENBAO_TOKEN_FILE="$DEMO/bao-token" \
  "$BIN/kleidia" --config "$DEMO/kleidia.toml" bootstrap --approle-out "$DEMO/approle"

KLEIDIA_DATABASE_OWNER_URL_FILE="$DEMO/database-owner-url" "$BIN/kleidia" --config "$DEMO/kleidia.toml" migrate

# The first admin, with a one-time password (changed at the first sign-in).
(umask 077 && "$BIN/kleidia" --config "$DEMO/kleidia.toml" user create --username admin --role admin \
  --generate-password 2>/dev/null >"$DEMO/admin-password")
chmod 600 "$DEMO/admin-password"

if [ -x scripts/demo-extras.sh ]; then
  # shellcheck disable=SC1091
  . scripts/demo-extras.sh
fi

# The license service: its own process and its own OpenBao token. Its
# KLEIDIA_LICENSE_* variables are set on that process only (the app would
# reject them as unknown keys).
start kleidia-license "$DEMO/logs/kleidia-license.log" env \
  KLEIDIA_LICENSE_LISTEN="$LICENSE_ADDR" \
  KLEIDIA_LICENSE_OPENBAO_ADDR="$BAO_ADDR" \
  KLEIDIA_LICENSE_OPENBAO_AUTH=approle \
  KLEIDIA_LICENSE_OPENBAO_ROLE_ID_FILE="$DEMO/approle/kleidia-license/role_id" \
  KLEIDIA_LICENSE_OPENBAO_SECRET_ID_FILE="$DEMO/approle/kleidia-license/secret_id" \
  "$BIN/kleidia-license" serve
wait_http "http://$LICENSE_ADDR/healthz" 30 "kleidia-license"
INSTALLATION_ID=$(curl -fsS "http://$LICENSE_ADDR/installation-id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["installation_id"])' 2>/dev/null || echo "?")

start kleidia "$DEMO/logs/kleidia.log" "$BIN/kleidia" --config "$DEMO/kleidia.toml" serve
wait_http "$APP_URL/healthz" 60 "kleidia serve"

# A software YubiKey 5.7.1 in factory state in reader "Virtual PCD 00 00".
start yubikey-0 "$DEMO/logs/yubikey-0.log" "$BIN/kleidia-virtual-yubikey" \
  --serial "$YK_SERIAL" --firmware 5.7.1 --state "$DEMO/yubikey-0.json" --reader 0 \
  --attestation-root "$DEMO/attestation-root.pem"

# The workstation agent, as a user would run it (plus: accept virtual readers).
start kleidia-agent "$DEMO/logs/kleidia-agent.log" "$BIN/kleidia-agent" \
  --kleidia-url "$APP_URL" --port "$AGENT_PORT" --allow-virtual-readers true --state-dir "$DEMO/agent"
wait_http "http://127.0.0.1:$AGENT_PORT/health" 60 "kleidia-agent"
for _ in $(seq 1 50); do
  if curl -fsS -H "Origin: $APP_URL" "http://127.0.0.1:$AGENT_PORT/discover" 2>/dev/null | grep -q "\"serial\":$YK_SERIAL"; then break; fi
  sleep 0.2
done

cat <<EOF

  Kleidia is running:   $APP_URL
  Logs:                 .demo/logs/
  Config:               .demo/kleidia.toml   (kleidia --config .demo/kleidia.toml …)
EOF
echo "  Sign in as:           admin / $(cat "$DEMO/admin-password")   (one-time password, also in .demo/admin-password)"
echo "  Agent:                http://127.0.0.1:$AGENT_PORT  (sees: $(curl -fsS -H "Origin: $APP_URL" "http://127.0.0.1:$AGENT_PORT/discover" 2>/dev/null | python3 -c 'import json,sys; print(", ".join(str(k["serial"]) for k in json.load(sys.stdin)["yubikeys"]) or "no YubiKey")' 2>/dev/null))"
echo "  Software YubiKey:     serial $YK_SERIAL, firmware 5.7.1, factory state (reader \"Virtual PCD 00 00\")"
echo "  License:              $(curl -fsS "http://$LICENSE_ADDR/license/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], "-", d.get("reason",""))' 2>/dev/null)"
echo "  Installation id:      $INSTALLATION_ID   (issue a license for it: see docs/license.md)"
echo
echo "  Ctrl-C stops everything the demo started."

# Foreground until Ctrl-C or until the server exits.
wait "$(cat "$DEMO/kleidia.pid")"
