#!/usr/bin/env bash
# The high-availability stack on one machine (docs/ha.md): three `kleidia
# serve` replicas behind HAProxy, a three-node OpenBao Raft cluster behind
# HAProxy (only the active node passes its health check), PostgreSQL and the
# license service. Everything listens on loopback, ports HA_PORT..HA_PORT+29.
#
#   scripts/ha.sh up      STATE_DIR   start it all (idempotent), write STATE_DIR/env
#   scripts/ha.sh down    STATE_DIR   stop exactly what `up` started (by recorded PID)
#   scripts/ha.sh status  STATE_DIR   what runs, HAProxy's view of each server
#   scripts/ha.sh app-kill   STATE_DIR N   SIGKILL replica N (1-3), as a crashed node
#   scripts/ha.sh app-stop   STATE_DIR N   SIGTERM replica N (it drains, then exits)
#   scripts/ha.sh app-start  STATE_DIR N   start replica N again, wait until HAProxy sends it traffic
#   scripts/ha.sh bao-active STATE_DIR     print the number (1-3) of the active OpenBao node
#   scripts/ha.sh bao-stop   STATE_DIR N   SIGTERM OpenBao node N
#   scripts/ha.sh bao-start  STATE_DIR N   start node N again and unseal it (it rejoins as a standby)
#   scripts/ha.sh license-restart STATE_DIR
#
# Ports (HA_PORT, default 18400):
#   +0  HAProxy: Kleidia (public URL http://127.0.0.1:HA_PORT)
#   +1..+3  the replicas          +9  HAProxy stats page (/stats)
#   +10 HAProxy: OpenBao (what Kleidia and the license service use)
#   +11/+12, +13/+14, +15/+16  OpenBao nodes 1-3 (API / cluster)
#   +20 the license service
#
# Environment: DATABASE_URL (+ DATABASE_RUNTIME_URL) to use that PostgreSQL,
# otherwise the local cluster (scripts/stack.sh postgres); HA_DB (default
# kleidia_ha) the database, created afresh by `up` when it does not exist;
# HA_REPLICAS (default 3) how many replicas `up` starts.
# TEST ONLY: the unseal key and root token are kept in STATE_DIR, next to the
# data they open (production: docs/openbao.md, docs/ha.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

cmd=${1:?usage: ha.sh up|down|status|app-kill|app-stop|app-start|bao-active|bao-stop|bao-start|license-restart STATE_DIR [N]}
state=${2:?usage: ha.sh COMMAND STATE_DIR [N]}
mkdir -p "$state"
state=$(cd "$state" && pwd)
chmod 700 "$state"
mkdir -p "$state/logs"

P=${HA_PORT:-18400}
APP_URL="http://127.0.0.1:$P"
BAO_LB="http://127.0.0.1:$((P + 10))"
LICENSE_ADDR="127.0.0.1:$((P + 20))"
BIN=${HA_BIN:-$ROOT/target/debug}
DB=${HA_DB:-kleidia_ha}
REPLICAS=${HA_REPLICAS:-3}

log() { echo "ha: $*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # seconds, description, command...
  local secs=$1 what=$2
  shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "ha: $what did not come up within ${secs}s" >&2
  return 1
}
stop_pid() { # pidfile, name, signal
  local f=$1 name=$2 sig=${3:-TERM}
  if alive "$f"; then
    local pid
    pid=$(cat "$f")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid, SIG$sig)"
  fi
  rm -f "$f"
}
node_arg() {
  local n=${1:?node number 1-3 expected}
  case "$n" in 1 | 2 | 3) echo "$n" ;; *)
    echo "ha: node number must be 1, 2 or 3, not '$n'" >&2
    exit 2
    ;;
  esac
}
bao_port() { echo $((P + 9 + 2 * $1)); }
app_port() { echo $((P + $1)); }

# ------------------------------------------------------------------ HAProxy
haproxy_cfg() {
  local servers="" baos="" n
  for n in 1 2 3; do
    servers+="  server app$n 127.0.0.1:$(app_port "$n") check"$'\n'
    baos+="  server bao$n 127.0.0.1:$(bao_port "$n") check"$'\n'
  done
  cat >"$state/haproxy.cfg" <<EOF
# Written by scripts/ha.sh. Loopback, plain HTTP: tests and the demo only.
global
  maxconn 4096
  stats socket $state/haproxy.sock mode 600 level admin
  pidfile $state/haproxy.pid

defaults
  mode http
  log global
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check 2s
  # A connection the replica refused (it just died) goes to another one: the
  # request never reached a server, so resending it is always safe.
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout

frontend kleidia
  bind 127.0.0.1:$P
  default_backend kleidia

# Kleidia's replicas are stateless (sessions, throttles and operations live in
# PostgreSQL): round robin, no stickiness. /readyz is 200 while PostgreSQL
# answers (also "degraded" while OpenBao fails over: pages keep working).
backend kleidia
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  # A request the replica may have started (empty answer, timeout) is resent
  # only when it cannot change anything: GET and HEAD.
  http-request disable-l7-retry if !METH_GET
  default-server inter 1s fastinter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
$servers
frontend openbao
  bind 127.0.0.1:$((P + 10))
  default_backend openbao

# Only the active node answers GET /v1/sys/health with 200 (standby 429,
# sealed 503), like openbao-helm's "active" service: clients always reach the
# leader, and a failover is a health check away.
backend openbao
  option httpchk GET /v1/sys/health
  http-check expect status 200
  default-server inter 1s fastinter 500ms fall 1 rise 1 on-marked-down shutdown-sessions
$baos
listen stats
  bind 127.0.0.1:$((P + 9))
  stats enable
  stats uri /stats
  stats refresh 2s
EOF
}

haproxy_up() {
  haproxy_cfg
  haproxy -c -q -f "$state/haproxy.cfg"
  if alive "$state/haproxy.pid"; then
    log "HAProxy already running (pid $(cat "$state/haproxy.pid"))"
    return
  fi
  haproxy -D -f "$state/haproxy.cfg" >"$state/logs/haproxy.log" 2>&1
  wait_for 10 HAProxy test -S "$state/haproxy.sock"
  log "started HAProxy: Kleidia $APP_URL, OpenBao $BAO_LB, stats http://127.0.0.1:$((P + 9))/stats"
}

# HAProxy's view of a server: UP, DOWN, MAINT, …
hap_status() { # backend server
  python3 - "$state/haproxy.sock" "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
for line in data.decode().splitlines():
    f = line.split(",")
    if len(f) > 17 and f[0] == sys.argv[2] and f[1] == sys.argv[3]:
        print(f[17].split(" ")[0])
PY
}
hap_is() { [ "$(hap_status "$1" "$2")" = "$3" ]; }

# ------------------------------------------------------------------ OpenBao
bao_cfg() { # node
  local n=$1 port joins="" m
  port=$(bao_port "$n")
  for m in 1 2 3; do
    [ "$m" = "$n" ] && continue
    joins+="  retry_join { leader_api_addr = \"http://127.0.0.1:$(bao_port "$m")\" }"$'\n'
  done
  mkdir -p "$state/bao$n/raft"
  chmod 700 "$state/bao$n"
  cat >"$state/bao$n/bao.hcl" <<EOF
storage "raft" {
  path    = "$state/bao$n/raft"
  node_id = "bao$n"
  # Test pace: elections within seconds (production: the default 5).
  performance_multiplier = 1
$joins}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$((port + 1))"
  tls_disable     = true
}
api_addr     = "http://127.0.0.1:$port"
cluster_addr = "http://127.0.0.1:$((port + 1))"
ui           = false
EOF
}

bao_start() { # node; start and unseal (the cluster must be initialised)
  local n=$1 port
  port=$(bao_port "$n")
  if ! alive "$state/bao$n.pid"; then
    bao_cfg "$n"
    setsid bao server -config="$state/bao$n/bao.hcl" >>"$state/logs/bao$n.log" 2>&1 </dev/null &
    echo $! >"$state/bao$n.pid"
    log "started OpenBao node $n on 127.0.0.1:$port (pid $(cat "$state/bao$n.pid"))"
  fi
  wait_for 30 "OpenBao node $n" curl -fsS "http://127.0.0.1:$port/v1/sys/seal-status"
  if [ -s "$state/bao-unseal-key" ] && curl -fsS "http://127.0.0.1:$port/v1/sys/seal-status" | grep -q '"sealed":true'; then
    # Unsealing a node that is not yet a peer also completes its retry_join.
    wait_for 60 "unseal of OpenBao node $n" bao_unseal "$n"
    log "unsealed OpenBao node $n"
  fi
}

bao_unseal() { # node
  local port
  port=$(bao_port "$1")
  curl -fsS -X PUT -d "{\"key\":\"$(cat "$state/bao-unseal-key")\"}" \
    "http://127.0.0.1:$port/v1/sys/unseal" >/dev/null
  curl -fsS "http://127.0.0.1:$port/v1/sys/seal-status" | grep -q '"sealed":false'
}

# 200 = active, 429 = unsealed standby.
bao_health() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(bao_port "$1")/v1/sys/health" 2>/dev/null || true; }

bao_active() {
  local n
  for n in 1 2 3; do
    if [ "$(bao_health "$n")" = 200 ]; then echo "$n"; return 0; fi
  done
  return 1
}

bao_peers() {
  curl -fsS -H "X-Vault-Token: $(cat "$state/bao-token")" "$BAO_LB/v1/sys/storage/raft/configuration" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["config"]["servers"]))'
}

bao_three_peers() { [ "$(bao_peers 2>/dev/null)" = 3 ]; }
bao_is_peer() { local h; h=$(bao_health "$1"); [ "$h" = 200 ] || [ "$h" = 429 ]; }

bao_up() {
  bao_start 1
  if curl -fsS "http://127.0.0.1:$(bao_port 1)/v1/sys/seal-status" | grep -q '"initialized":false'; then
    (umask 077 && curl -fsS -X PUT -d '{"secret_shares":1,"secret_threshold":1}' \
      "http://127.0.0.1:$(bao_port 1)/v1/sys/init" >"$state/bao-init.json")
    (umask 077 && python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print(d["keys_base64"][0]); print(d["root_token"], file=sys.stderr)' \
      "$state/bao-init.json" >"$state/bao-unseal-key" 2>"$state/bao-token")
    rm -f "$state/bao-init.json"
    log "initialised the OpenBao cluster on node 1 (1 key share; key and root token in $state, TEST ONLY)"
    bao_start 1
  fi
  wait_for 60 "an active OpenBao node" bao_active
  bao_start 2
  bao_start 3
  wait_for 60 "three Raft peers" bao_three_peers
  wait_for 30 "OpenBao behind HAProxy" curl -fsS "$BAO_LB/v1/sys/health"
  log "OpenBao: 3 Raft peers, node $(bao_active) active"
}

# --------------------------------------------------------------- PostgreSQL
pg_up() {
  if [ -z "${DATABASE_URL:-}" ]; then
    scripts/stack.sh postgres "$state/pg" >/dev/null
    DATABASE_URL=$(cat "$state/pg/database-url")
    DATABASE_RUNTIME_URL=$(cat "$state/pg/database-runtime-url")
  fi
  OWNER_URL="${DATABASE_URL%/*}/$DB"
  if [ -n "${DATABASE_RUNTIME_URL:-}" ]; then
    RUNTIME_URL="${DATABASE_RUNTIME_URL%/*}/$DB"
  else
    RUNTIME_URL=$OWNER_URL
  fi
  if ! psql "$DATABASE_URL" -qAt -c "select 1 from pg_database where datname = '$DB'" | grep -q 1; then
    psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $DB" >/dev/null
    log "created database $DB"
  fi
  (umask 077 && echo "$OWNER_URL" >"$state/database-owner-url" && echo "$RUNTIME_URL" >"$state/database-url")
}

# ------------------------------------------------------------------ Kleidia
kleidia_cfg() {
  (
    umask 077
    cat >"$state/kleidia.toml" <<EOF
# Written by scripts/ha.sh: what every replica shares (bind comes from
# KLEIDIA_SERVER_BIND per replica). Loopback, plain HTTP: tests and the demo only.
[server]
public_url = "$APP_URL"
shutdown_grace_secs = 5

[database]
url = "$(cat "$state/database-url")"

[openbao]
# HAProxy's OpenBao frontend: always the active node.
addr = "$BAO_LB"
auth = "approle"
role_id_file = "$state/approle/kleidia-app/role_id"
secret_id_file = "$state/approle/kleidia-app/secret_id"
timeout_secs = 3

[license]
url = "http://$LICENSE_ADDR"
cache_secs = 5

[attestation]
# The software YubiKey's test root (production: Yubico's).
roots_file = "$state/attestation-roots.crt"
EOF
  )
}

app_start() { # replica
  local n=$1 port
  port=$(app_port "$n")
  if alive "$state/app$n.pid"; then return; fi
  KLEIDIA_SERVER_BIND="127.0.0.1:$port" KLEIDIA_LOG_LEVEL=${HA_LOG_LEVEL:-info} \
    setsid "$BIN/kleidia" --config "$state/kleidia.toml" serve >>"$state/logs/app$n.log" 2>&1 </dev/null &
  echo $! >"$state/app$n.pid"
  wait_for 60 "replica $n" curl -fsS "http://127.0.0.1:$port/readyz"
  log "started replica $n on 127.0.0.1:$port (pid $(cat "$state/app$n.pid"))"
}

app_wait_in() { wait_for 30 "HAProxy's health check of replica $1" hap_is kleidia "app$1" UP; }

license_start() {
  if alive "$state/license.pid"; then return; fi
  KLEIDIA_LICENSE_LISTEN="$LICENSE_ADDR" \
    KLEIDIA_LICENSE_OPENBAO_ADDR="$BAO_LB" \
    KLEIDIA_LICENSE_OPENBAO_AUTH=approle \
    KLEIDIA_LICENSE_OPENBAO_ROLE_ID_FILE="$state/approle/kleidia-license/role_id" \
    KLEIDIA_LICENSE_OPENBAO_SECRET_ID_FILE="$state/approle/kleidia-license/secret_id" \
    setsid "$BIN/kleidia-license" serve >>"$state/logs/license.log" 2>&1 </dev/null &
  echo $! >"$state/license.pid"
  wait_for 30 "the license service" curl -fsS "http://$LICENSE_ADDR/healthz"
  log "started the license service on $LICENSE_ADDR (pid $(cat "$state/license.pid"))"
}

up() {
  for b in kleidia kleidia-license kleidia-virtual-yubikey; do
    [ -x "$BIN/$b" ] || { echo "ha: $BIN/$b is missing: cargo build --workspace --bins" >&2; exit 1; }
  done
  command -v haproxy >/dev/null || { echo "ha: haproxy is missing: scripts/install-deps.sh" >&2; exit 1; }
  pg_up
  haproxy_up
  bao_up
  if [ ! -s "$state/attestation-root.pem" ]; then
    "$BIN/kleidia-virtual-yubikey" init-attestation-root --out "$state/attestation-root.pem" >"$state/attestation-roots.crt"
  fi
  kleidia_cfg
  # Bootstrap with the root token (only bootstrap has it): the layout, and
  # AppRole credentials for the app and the license service.
  if [ ! -s "$state/approle/kleidia-app/secret_id" ]; then
    KLEIDIA_OPENBAO_AUTH=token KLEIDIA_OPENBAO_TOKEN_FILE="$state/bao-token" \
      "$BIN/kleidia" --config "$state/kleidia.toml" bootstrap --approle-out "$state/approle" >"$state/logs/bootstrap.log"
  fi
  KLEIDIA_DATABASE_OWNER_URL_FILE="$state/database-owner-url" "$BIN/kleidia" --config "$state/kleidia.toml" migrate >"$state/logs/migrate.log"
  if [ ! -s "$state/admin-password" ]; then
    (umask 077 && "$BIN/kleidia" --config "$state/kleidia.toml" user create --username admin --role admin \
      --generate-password 2>/dev/null >"$state/admin-password")
  fi
  license_start
  local n
  for ((n = 1; n <= REPLICAS; n++)); do app_start "$n"; done
  for ((n = 1; n <= REPLICAS; n++)); do app_wait_in "$n"; done
  {
    echo "export HA_URL='$APP_URL'"
    echo "export HA_BAO_ADDR='$BAO_LB'"
    echo "export HA_LICENSE_URL='http://$LICENSE_ADDR'"
    echo "export HA_STATE='$state'"
    echo "export HA_DATABASE_URL='$(cat "$state/database-url")'"
    echo "export HA_DATABASE_OWNER_URL='$(cat "$state/database-owner-url")'"
  } >"$state/env"
  chmod 600 "$state/env"
  log "ready: $APP_URL ($REPLICAS replicas), sign in as admin with the one-time password in $state/admin-password"
}

down() {
  local n
  for n in 1 2 3; do stop_pid "$state/app$n.pid" "replica $n"; done
  stop_pid "$state/license.pid" "license service"
  for n in 3 2 1; do stop_pid "$state/bao$n.pid" "OpenBao node $n"; done
  stop_pid "$state/haproxy.pid" HAProxy
}

status() {
  local n
  for n in 1 2 3; do
    printf 'replica %s: %s, HAProxy %s\n' "$n" "$(alive "$state/app$n.pid" && echo running || echo stopped)" "$(hap_status kleidia "app$n" 2>/dev/null)"
  done
  for n in 1 2 3; do
    printf 'OpenBao %s: %s, health %s, HAProxy %s\n' "$n" "$(alive "$state/bao$n.pid" && echo running || echo stopped)" "$(bao_health "$n")" "$(hap_status openbao "bao$n" 2>/dev/null)"
  done
  printf 'license service: %s\n' "$(alive "$state/license.pid" && echo running || echo stopped)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  app-kill)
    n=$(node_arg "${3:-}")
    stop_pid "$state/app$n.pid" "replica $n" KILL
    ;;
  app-stop)
    n=$(node_arg "${3:-}")
    stop_pid "$state/app$n.pid" "replica $n" TERM
    ;;
  app-start)
    n=$(node_arg "${3:-}")
    app_start "$n"
    app_wait_in "$n"
    ;;
  bao-active) bao_active ;;
  bao-stop)
    n=$(node_arg "${3:-}")
    stop_pid "$state/bao$n.pid" "OpenBao node $n" TERM
    ;;
  bao-start)
    n=$(node_arg "${3:-}")
    bao_start "$n"
    wait_for 60 "OpenBao node $n as a peer (active or standby)" bao_is_peer "$n"
    ;;
  license-restart)
    stop_pid "$state/license.pid" "license service" TERM
    license_start
    ;;
  *)
    echo "ha: unknown command $cmd" >&2
    exit 2
    ;;
esac
