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
  rm -f "$DEMO"/*.pid
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
ROOT_TOKEN=$BAO_TOKEN

# The configuration `kleidia --config .demo/kleidia.toml …` uses from any terminal.
(
  umask 077
  cat >"$DEMO/kleidia.toml" <<EOF
# Written by scripts/demo.sh. Demo only: loopback, plain HTTP, OpenBao dev server.
[server]
bind = "127.0.0.1:8080"
public_url = "$APP_URL"

[database]
url = "$DATABASE_URL"

[openbao]
addr = "$BAO_ADDR"
# A token with the kleidia-app policy; bootstrap with --openbao-token-file .demo/bao-token
token_file = "$DEMO/app-token"

[license]
url = "http://$LICENSE_ADDR"
EOF
)

echo "demo: OpenBao layout"
"$BIN/kleidia" --config "$DEMO/kleidia.toml" bootstrap --openbao-token-file "$DEMO/bao-token"

# Least privilege even in the demo: the app and the license service get their own tokens.
mint_token() { # policy file
  curl -fsS -H "X-Vault-Token: $ROOT_TOKEN" -X POST \
    -d "{\"policies\":[\"$1\"],\"no_default_policy\":true,\"ttl\":\"720h\"}" \
    "$BAO_ADDR/v1/auth/token/create" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])' >"$2"
  chmod 600 "$2"
}
mint_token kleidia-app "$DEMO/app-token"
mint_token kleidia-license "$DEMO/license-token"

"$BIN/kleidia" --config "$DEMO/kleidia.toml" migrate

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
  KLEIDIA_LICENSE_OPENBAO_TOKEN_FILE="$DEMO/license-token" \
  "$BIN/kleidia-license" serve
wait_http "http://$LICENSE_ADDR/healthz" 30 "kleidia-license"
INSTALLATION_ID=$(curl -fsS "http://$LICENSE_ADDR/installation-id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["installation_id"])' 2>/dev/null || echo "?")

start kleidia "$DEMO/logs/kleidia.log" "$BIN/kleidia" --config "$DEMO/kleidia.toml" serve
wait_http "$APP_URL/healthz" 60 "kleidia serve"

cat <<EOF

  Kleidia is running:   $APP_URL
  Logs:                 .demo/logs/
  Config:               .demo/kleidia.toml   (kleidia --config .demo/kleidia.toml …)
EOF
if [ -f "$DEMO/admin-password" ]; then
  echo "  Sign in as admin with the one-time password: $(cat "$DEMO/admin-password")   (also in .demo/admin-password)"
fi
echo "  License:              $(curl -fsS "http://$LICENSE_ADDR/license/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], "-", d.get("reason",""))' 2>/dev/null)"
echo "  Installation id:      $INSTALLATION_ID   (issue a license for it: see docs/license.md)"
echo
echo "  Ctrl-C stops everything the demo started."

# Foreground until Ctrl-C or until the server exits.
wait "${pids[-1]}"
