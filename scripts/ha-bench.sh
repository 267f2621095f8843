#!/usr/bin/env bash
# `make ha-bench`: device-list and sign-in throughput through HAProxy with 3,
# 2 and 1 replicas on the same PostgreSQL and OpenBao cluster (scripts/ha.sh),
# reported as ratios to one replica, with how busy the machine's CPUs were
# during each run (the honest ceiling on a small machine). Measures; asserts
# nothing. Writes target/bench/ha-report.md and target/bench/ha-report.json.
#
# Environment: HA_BENCH_SECONDS (10) per run, HA_BENCH_DEVICES (20000),
# HA_BENCH_PROFILE (release; debug measures the debug build, much slower and
# only good for ratios), HA_BENCH_PORT (18460: uses 18460..18480).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${HA_BENCH_SECONDS:-10}
DEVICES=${HA_BENCH_DEVICES:-20000}
PROFILE=${HA_BENCH_PROFILE:-release}
export HA_PORT=${HA_BENCH_PORT:-18460}
STATE=${HA_BENCH_STATE:-.ha-bench}
OUT=target/bench
mkdir -p "$OUT"
URL="http://127.0.0.1:$HA_PORT"

scripts/install-deps.sh >/dev/null
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p kleidia -p kleidia-license -p kleidia-virtual-yubikey --bins
fi
export HA_BIN=$PWD/target/$PROFILE

# A fresh database each time (the OpenBao cluster's data goes with the state dir).
scripts/ha.sh down "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"
export HA_DB=kleidia_ha_bench
if [ -z "${DATABASE_URL:-}" ]; then
  scripts/stack.sh postgres "$STATE/pg" >/dev/null
  DATABASE_URL=$(cat "$STATE/pg/database-url")
  DATABASE_RUNTIME_URL=$(cat "$STATE/pg/database-runtime-url")
  export DATABASE_URL DATABASE_RUNTIME_URL
fi
PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -qAt -c "DROP DATABASE IF EXISTS $HA_DB WITH (FORCE)" >/dev/null
trap 'scripts/ha.sh down "$STATE" >/dev/null' EXIT
HA_LOG_LEVEL=warn scripts/ha.sh up "$STATE"

OWNER_URL=$(cat "$STATE/database-owner-url")
psql "$OWNER_URL" -qAt -c "
  INSERT INTO devices (serial, firmware, state, secrets_version)
  SELECT 10000000 + g, CASE WHEN g % 3 = 0 THEN '5.7.1' ELSE '5.4.3' END,
         (ARRAY['registered','active','active','active','suspended','lost','retired'])[1 + g % 7],
         CASE WHEN g % 5 = 0 THEN NULL ELSE 1 END
  FROM generate_series(1, $DEVICES) g" >/dev/null
PASSWORD=ha-bench-password-1
echo "$PASSWORD" | "$HA_BIN/kleidia" --config "$STATE/kleidia.toml" user create \
  --username bench --role admin --password-stdin >/dev/null 2>&1

cat >"$OUT/ha-login.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"$PASSWORD"}'
wrk.headers["Content-Type"] = "application/json"
LUA

# Busy share of all CPUs between two /proc/stat samples, in percent.
cpu_sample() { awk '/^cpu / {print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
cpu_busy() { # before after
  python3 -c 'import sys; b=sys.argv[1].split(); a=sys.argv[2].split()
print(round(100*(float(a[0])-float(b[0]))/max(1.0,float(a[1])-float(b[1])),1))' "$1" "$2"
}

# wrk through HAProxy: prints "rps non2xx busy%".
measure() { # connections, extra wrk args...
  local c=$1
  shift
  local before after out total non2xx
  before=$(cpu_sample)
  out=$(wrk -t2 -c"$c" -d"${DURATION}s" "$@")
  after=$(cpu_sample)
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses/ {print $5}' <<<"$out")
  non2xx=${non2xx:-0}
  echo "$(python3 -c "print(round(($total - $non2xx) / $DURATION, 1))") $non2xx $(cpu_busy "$before" "$after")"
}

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
results=()
for n in 3 2 1; do
  # Exactly n replicas in HAProxy's rotation.
  for m in 1 2 3; do
    if [ "$m" -le "$n" ]; then scripts/ha.sh app-start "$STATE" "$m" >/dev/null; else scripts/ha.sh app-stop "$STATE" "$m" >/dev/null; fi
  done
  sleep 3 # HAProxy marks the stopped ones DOWN (fall 2 × 1 s)
  TOKEN=$(curl -fsS -H 'Content-Type: application/json' -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" \
    "$URL/api/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  read -r list_rps list_err list_cpu < <(measure 16 -H "Authorization: Bearer $TOKEN" "$URL/api/devices?limit=50")
  read -r login_rps login_refused login_cpu < <(measure 64 -s "$OUT/ha-login.lua" "$URL/api/auth/login")
  echo "ha-bench: $n replica(s): device list $list_rps req/s (non-2xx $list_err, CPU $list_cpu%), sign-in $login_rps/s (refused $login_refused, CPU $login_cpu%)"
  results+=("$n $list_rps $list_err $list_cpu $login_rps $login_refused $login_cpu")
done

printf '%s\n' "${results[@]}" >"$OUT/ha-runs.txt"
python3 - "$OUT" "$DURATION" "$DEVICES" "$PROFILE" "$(nproc)" "$LOAD_BEFORE" <<'PY'
import json, sys
out, duration, devices, profile, cores, load_before = sys.argv[1:7]
rows = {}
for line in open(f"{out}/ha-runs.txt").read().split("\n"):
    if not line.strip():
        continue
    n, lr, le, lc, sr, se, sc = line.split()
    rows[int(n)] = dict(replicas=int(n), device_list_rps=float(lr), device_list_non2xx=int(le),
                        device_list_cpu_busy_pct=float(lc), sign_in_per_s=float(sr),
                        sign_in_refused=int(se), sign_in_cpu_busy_pct=float(sc))
one = rows[1]
for r in rows.values():
    r["device_list_ratio"] = round(r["device_list_rps"] / max(one["device_list_rps"], 0.1), 2)
    r["sign_in_ratio"] = round(r["sign_in_per_s"] / max(one["sign_in_per_s"], 0.1), 2)
report = dict(cores=int(cores), load_average_before=float(load_before), profile=profile, seconds_per_run=int(duration), devices=int(devices),
              through="HAProxy round robin, one PostgreSQL, a three-node OpenBao Raft cluster",
              runs=[rows[n] for n in sorted(rows)])
json.dump(report, open(f"{out}/ha-report.json", "w"), indent=2)
md = [f"# Kleidia HA bench ({cores} cores, {profile} build)", "",
      f"Through HAProxy on one machine: {devices} devices, {duration} s per run; device list: 16 connections "
      "`GET /api/devices?limit=50` with a bearer token; sign-in: 64 connections `POST /api/auth/login` "
      "(Argon2id, refused = 503 from the bounded hash queue). CPU = busy share of all cores during the run "
      "(replicas, PostgreSQL, OpenBao, HAProxy and wrk share them, with anything else running: "
      f"the 1-minute load average was {load_before} before the first run).", "",
      "| replicas | device list req/s | ratio | CPU busy | sign-ins/s | ratio | refused | CPU busy |",
      "|---|---|---|---|---|---|---|---|"]
for n in sorted(rows):
    r = rows[n]
    md.append(f"| {n} | {r['device_list_rps']} | {r['device_list_ratio']} | {r['device_list_cpu_busy_pct']}% | "
              f"{r['sign_in_per_s']} | {r['sign_in_ratio']} | {r['sign_in_refused']} | {r['sign_in_cpu_busy_pct']}% |")
md += ["", "Where the CPU is already near 100 % with one replica, more replicas cannot add throughput on this "
       "machine: the ratio then measures the machine, not Kleidia. Replicas scale when each has cores of its "
       "own (docs/ha.md)."]
open(f"{out}/ha-report.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "ha-bench: report in $OUT/ha-report.md and $OUT/ha-report.json"
