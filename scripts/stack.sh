#!/usr/bin/env bash
# Start and stop the services Kleidia needs on one machine: PostgreSQL, an
# OpenBao dev server on loopback, and pcscd with the vpcd reader driver.
#
#   scripts/stack.sh up   STATE_DIR   start what is not running, write STATE_DIR/env
#   scripts/stack.sh down STATE_DIR   stop exactly what `up` started (by recorded PID)
#   scripts/stack.sh status STATE_DIR
#   scripts/stack.sh postgres STATE_DIR   PostgreSQL alone (scripts/ha.sh): STATE_DIR/database-url, …
#
# Environment:
#   DATABASE_URL   use this PostgreSQL instead of starting the local cluster
#                  (its role owns the schema; DATABASE_RUNTIME_URL, if set, is
#                  the server's runtime role there)
#   BAO_PORT       OpenBao dev server port (default 8200; it also binds BAO_PORT+1)
#   BAO_TOKEN      root token for the dev server (default: random, kept in STATE_DIR/bao-token)
#   BAO_MODE       dev (default): `bao server -dev`, in memory;
#                  raft: a real server with raft storage in STATE_DIR/bao-raft, initialised
#                  with one key share and unsealed (the production path, needed for backup and
#                  restore; docs/openbao.md). TEST ONLY: the unseal key and the root token are
#                  kept in STATE_DIR (bao-unseal-key, bao-token), next to the data they open.
#   BAO_TLS        1: OpenBao serves https:// (either mode). A CA is generated at the first
#                  start (openssl, P-256, STATE_DIR/bao-tls/ca.pem; TEST ONLY, its key sits next
#                  to it) and issues the server certificate for 127.0.0.1 and localhost. The env
#                  file exports BAO_CACERT (the bao CLI's variable; the tests hand it to Kleidia
#                  as openbao.ca_file). Changing BAO_TLS needs a `down` first.
#
# Never prompts; running `up` twice in a row is harmless.
set -euo pipefail

cmd=${1:?usage: stack.sh up|down|status STATE_DIR}
state=${2:?usage: stack.sh up|down|status STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)
chmod 700 "$state"

PG_VERSION=15
PG_CLUSTER=main
BAO_PORT=${BAO_PORT:-8200}
PCSC_SOCKET=/run/pcscd/pcscd.comm

log() { echo "stack: $*"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "stack: $what did not come up within ${secs}s" >&2
  return 1
}

stop_pid() { # pidfile, name
  local f=$1 name=$2
  if alive "$f"; then
    local pid
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------- PostgreSQL
pg_up() {
  if [ -n "${DATABASE_URL:-}" ]; then
    log "using DATABASE_URL from the environment"
    echo "$DATABASE_URL" >"$state/database-url"
    echo "${DATABASE_RUNTIME_URL:-}" >"$state/database-runtime-url"
    return
  fi
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2" "$4}' | grep -q "^$PG_VERSION $PG_CLUSTER online"; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    touch "$state/postgres.started-by-us"
    log "started PostgreSQL $PG_VERSION/$PG_CLUSTER"
  else
    log "PostgreSQL $PG_VERSION/$PG_CLUSTER already running"
  fi
  wait_for 30 PostgreSQL su postgres -c "psql -qAtc 'select 1'"
  local port
  port=$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $3}')
  # Two roles (docs/security.md, "Audit log"): kleidia owns the schema and runs
  # migrations; it may create databases, as tests make a fresh one per test.
  # kleidia_app is the server's runtime role: no attributes, only the grants
  # `kleidia migrate` gives it, so it cannot disable the audit log's triggers.
  su postgres -c "psql -qAt" <<'SQL' >/dev/null
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kleidia') THEN
    CREATE ROLE kleidia LOGIN CREATEDB PASSWORD 'kleidia';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kleidia_app') THEN
    CREATE ROLE kleidia_app LOGIN PASSWORD 'kleidia_app';
  END IF;
  -- The owner may end the runtime role's sessions (fault tests cut the
  -- server's connections); the runtime role gains nothing from this.
  IF NOT pg_has_role('kleidia', 'kleidia_app', 'MEMBER') THEN
    GRANT kleidia_app TO kleidia;
  END IF;
END $$;
SQL
  if ! su postgres -c "psql -qAtc \"select 1 from pg_database where datname='kleidia'\"" | grep -q 1; then
    su postgres -c "createdb -O kleidia kleidia"
    log "created database kleidia"
  fi
  echo "postgres://kleidia:kleidia@127.0.0.1:${port}/kleidia" >"$state/database-url"
  echo "postgres://kleidia_app:kleidia_app@127.0.0.1:${port}/kleidia" >"$state/database-runtime-url"
}

pg_down() {
  if [ -f "$state/postgres.started-by-us" ]; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
    rm -f "$state/postgres.started-by-us"
    log "stopped PostgreSQL $PG_VERSION/$PG_CLUSTER"
  fi
}

# ------------------------------------------------------------------- OpenBao
bao_scheme() { if [ "${BAO_TLS:-0}" = 1 ]; then echo https; else echo http; fi; }

# BAO_TLS=1: a test CA (made once per state dir) and a server certificate from
# it for 127.0.0.1 and localhost, in STATE_DIR/bao-tls.
bao_tls_files() {
  local d="$state/bao-tls"
  mkdir -p "$d"
  chmod 700 "$d"
  if [ ! -s "$d/ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$d/ca.key" -out "$d/ca.pem" -days 30 -subj "/CN=Kleidia test stack CA" \
      -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    rm -f "$d/server.pem"
    log "generated a test CA for OpenBao's TLS listener: $d/ca.pem"
  fi
  if [ ! -s "$d/server.pem" ]; then
    printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
      extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost >"$d/server.ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$d/server.key" -out "$d/server.csr" -subj /CN=127.0.0.1 2>/dev/null
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
      -CAcreateserial -days 30 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
    chmod 600 "$d/ca.key" "$d/server.key"
  fi
}

# curl against OpenBao, trusting the test CA in TLS mode.
bao_curl() {
  if [ "${BAO_TLS:-0}" = 1 ]; then curl --cacert "$state/bao-tls/ca.pem" "$@"; else curl "$@"; fi
}

bao_up() {
  if [ "${BAO_TLS:-0}" = 1 ]; then
    bao_tls_files
    export BAO_CACERT="$state/bao-tls/ca.pem"
  fi
  if [ "${BAO_MODE:-dev}" = raft ]; then
    bao_raft_up
    return
  fi
  local token
  if [ -n "${BAO_TOKEN:-}" ]; then
    token=$BAO_TOKEN
  elif [ -f "$state/bao-token" ]; then
    token=$(cat "$state/bao-token")
  else
    token=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  fi
  (umask 077 && echo "$token" >"$state/bao-token")
  local addr
  addr="$(bao_scheme)://127.0.0.1:${BAO_PORT}"
  if alive "$state/bao.pid"; then
    # Keep the address it was started with.
    addr=$(cat "$state/bao-addr")
    log "OpenBao already running at $addr (pid $(cat "$state/bao.pid"))"
  else
    if curl -ksS "$addr/v1/sys/health" >/dev/null 2>&1; then
      echo "stack: something else answers on $addr; set BAO_PORT" >&2
      exit 1
    fi
    local listen="127.0.0.1:${BAO_PORT}" config=()
    if [ "${BAO_TLS:-0}" = 1 ]; then
      # Dev mode's own listener is plain http: it moves to BAO_PORT+2 and a
      # TLS listener from a config file takes BAO_PORT.
      listen="127.0.0.1:$((BAO_PORT + 2))"
      cat >"$state/bao-dev-tls.hcl" <<EOF
listener "tcp" {
  address       = "127.0.0.1:${BAO_PORT}"
  tls_cert_file = "$state/bao-tls/server.pem"
  tls_key_file  = "$state/bao-tls/server.key"
}
EOF
      config=(-config="$state/bao-dev-tls.hcl")
    fi
    # Dev mode: in memory, unsealed, root token; loopback only. Never production.
    setsid bao server -dev -dev-root-token-id="$token" -dev-listen-address="$listen" \
      "${config[@]}" >"$state/bao.log" 2>&1 </dev/null &
    echo $! >"$state/bao.pid"
    echo "$addr" >"$state/bao-addr"
    log "started OpenBao dev server on $addr (pid $(cat "$state/bao.pid"))"
  fi
  wait_for 30 OpenBao bao_curl -fsS "$addr/v1/sys/health"
}

bao_down() { stop_pid "$state/bao.pid" OpenBao; }

# OpenBao with raft storage: `bao server -config`, init (1 key share), unseal.
bao_raft_up() {
  local addr
  addr="$(bao_scheme)://127.0.0.1:${BAO_PORT}"
  if alive "$state/bao.pid"; then
    addr=$(cat "$state/bao-addr")
    log "OpenBao (raft) already running at $addr (pid $(cat "$state/bao.pid"))"
  else
    if curl -ksS "$addr/v1/sys/seal-status" >/dev/null 2>&1; then
      echo "stack: something else answers on $addr; set BAO_PORT" >&2
      exit 1
    fi
    mkdir -p "$state/bao-raft"
    chmod 700 "$state/bao-raft"
    # Loopback, TLS only with BAO_TLS=1: tests and the demo only. OpenBao 2.x
    # has no mlock any more (it warns about `disable_mlock`), so the key is not set.
    local tls="tls_disable     = true"
    if [ "${BAO_TLS:-0}" = 1 ]; then
      tls="tls_cert_file   = \"$state/bao-tls/server.pem\"
  tls_key_file    = \"$state/bao-tls/server.key\""
    fi
    cat >"$state/bao-raft.hcl" <<EOF
storage "raft" {
  path    = "$state/bao-raft"
  node_id = "kleidia-1"
  performance_multiplier = 1   # one node: elect itself at once (test pace)
}
listener "tcp" {
  address         = "127.0.0.1:${BAO_PORT}"
  cluster_address = "127.0.0.1:$((BAO_PORT + 1))"
  $tls
}
api_addr     = "$addr"
cluster_addr = "$(bao_scheme)://127.0.0.1:$((BAO_PORT + 1))"
ui           = false
EOF
    setsid bao server -config="$state/bao-raft.hcl" >"$state/bao.log" 2>&1 </dev/null &
    echo $! >"$state/bao.pid"
    echo "$addr" >"$state/bao-addr"
    log "started OpenBao with raft storage on $addr (pid $(cat "$state/bao.pid"))"
  fi
  wait_for 30 "OpenBao (raft)" bao_curl -fsS "$addr/v1/sys/seal-status"
  if bao_curl -fsS "$addr/v1/sys/seal-status" | grep -q '"initialized":false'; then
    (umask 077 && BAO_ADDR=$addr bao operator init -key-shares=1 -key-threshold=1 \
      -format=json >"$state/bao-init.json")
    (umask 077 && python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print(d["unseal_keys_b64"][0]); print(d["root_token"], file=sys.stderr)' \
      "$state/bao-init.json" >"$state/bao-unseal-key" 2>"$state/bao-token")
    rm -f "$state/bao-init.json"
    log "initialised OpenBao (1 key share; unseal key and root token in $state, test only)"
  fi
  if bao_curl -fsS "$addr/v1/sys/seal-status" | grep -q '"sealed":true'; then
    BAO_ADDR=$addr bao operator unseal "$(cat "$state/bao-unseal-key")" >/dev/null
    log "unsealed OpenBao"
  fi
  # Active and unsealed (raft elects itself leader within a few seconds).
  wait_for 60 "OpenBao (raft) active" bao_curl -fsS "$addr/v1/sys/health"
}

# --------------------------------------------------------------------- pcscd
pcscd_running() { pgrep -x pcscd >/dev/null 2>&1; }

pcscd_up() {
  if pcscd_running; then
    log "pcscd already running"
    return
  fi
  mkdir -p "$state/reader.conf.d"
  # One vpcd entry: readers "Virtual PCD 00 00" (TCP 35963) and "00 01" (35964).
  # vpcd listens on all interfaces: tests and the demo only.
  cat >"$state/reader.conf.d/vpcd" <<'EOF'
FRIENDLYNAME "Virtual PCD"
DEVICENAME   /dev/null:0x8C7B
LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID    0x8C7B
EOF
  rm -f "$PCSC_SOCKET"
  setsid pcscd --foreground --config "$state/reader.conf.d/vpcd" >"$state/pcscd.log" 2>&1 </dev/null &
  echo $! >"$state/pcscd.pid"
  wait_for 10 pcscd test -S "$PCSC_SOCKET"
  log "started pcscd with the vpcd reader (pid $(cat "$state/pcscd.pid"))"
}

pcscd_down() {
  if alive "$state/pcscd.pid"; then
    stop_pid "$state/pcscd.pid" pcscd
  fi
  rm -f "$state/pcscd.pid"
}

write_env() {
  {
    echo "export DATABASE_URL='$(cat "$state/database-url")'"
    if [ -s "$state/database-runtime-url" ]; then
      echo "export DATABASE_RUNTIME_URL='$(cat "$state/database-runtime-url")'"
    fi
    echo "export BAO_ADDR='$(cat "$state/bao-addr")'"
    echo "export BAO_TOKEN='$(cat "$state/bao-token")'"
    if [ "${BAO_TLS:-0}" = 1 ]; then
      echo "export BAO_CACERT='$state/bao-tls/ca.pem'"
    fi
  } >"$state/env"
  chmod 600 "$state/env"
}

case "$cmd" in
  up)
    pg_up
    bao_up
    pcscd_up
    write_env
    log "ready; environment in $state/env"
    ;;
  down)
    pcscd_down
    bao_down
    pg_down
    ;;
  postgres)
    pg_up
    ;;
  status)
    pg_lsclusters 2>/dev/null || true
    if alive "$state/bao.pid"; then echo "OpenBao: running (pid $(cat "$state/bao.pid"))"; else echo "OpenBao: not started here"; fi
    if pcscd_running; then echo "pcscd: running"; else echo "pcscd: not running"; fi
    ;;
  *)
    echo "usage: stack.sh up|down|status STATE_DIR" >&2
    exit 2
    ;;
esac
