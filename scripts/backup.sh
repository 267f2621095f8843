#!/usr/bin/env bash
# Back up one Kleidia installation: a PostgreSQL dump, then an OpenBao raft
# snapshot, as one pair in OUT_DIR (docs/openbao.md, "Backup and restore").
#
#   scripts/backup.sh OUT_DIR
#
# Environment:
#   DATABASE_URL    PostgreSQL URL of a role that can read every table (the
#                   schema owner, `database.owner_url`)
#   BAO_ADDR        OpenBao's address (raft storage; a dev server has no snapshots)
#   BAO_TOKEN       a token with the `kleidia-backup` policy (docs/openbao.md):
#                   read on sys/storage/raft/snapshot and on the audit anchor
#   BAO_CACERT      (optional) CA bundle for an https:// BAO_ADDR (read by `bao`)
#   KLEIDIA_APP_MOUNT  the app's KV v2 mount (`openbao.app_mount`, default secret)
#
# The order is fixed: PostgreSQL first. Devices in PostgreSQL point to KV v2
# versions in OpenBao, and those only grow, so a snapshot taken after the dump
# holds every version the dump points to. The audit anchor can move between the
# two; the pair is taken again (up to 3 times) until the anchor in OpenBao does
# not cover rows the dump lacks, and the manifest says whether it succeeded.
#
# Output (mode 600, OUT_DIR 700): postgres.dump (pg_dump custom format),
# openbao.snap (encrypted with OpenBao's barrier key; it opens only with the
# unseal keys of the cluster it came from, which are NOT in it), manifest.
# Exit status: 0 done; 3 done, but audit_consistent=false (see above); other: failed.
set -euo pipefail

out=${1:?usage: backup.sh OUT_DIR}
: "${DATABASE_URL:?set DATABASE_URL (the schema owner)}"
: "${BAO_ADDR:?set BAO_ADDR}"
: "${BAO_TOKEN:?set BAO_TOKEN (kleidia-backup policy)}"
mount=${KLEIDIA_APP_MOUNT:-secret}
export BAO_ADDR BAO_TOKEN

log() { echo "backup: $*" >&2; }

if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "backup: $out is not empty; give a new directory" >&2
  exit 2
fi
umask 077
mkdir -p "$out"
chmod 700 "$out"

# The audit chain's head as recorded in the dump itself (audit_head.last_id).
dump_audit_head() {
  pg_restore --data-only --table=audit_head -f - "$1" | awk '
    /^COPY .*audit_head \(/ {
      sub(/.*\(/, ""); sub(/\).*/, ""); n = split($0, cols, ", ")
      for (i = 1; i <= n; i++) if (cols[i] == "last_id") col = i
      copying = 1; next
    }
    copying && /^\\\.$/ { copying = 0; next }
    copying && col { split($0, f, "\t"); print f[col]; exit }'
}

# The id of the newest audit anchor in OpenBao (0: none yet).
anchor_id() {
  local v
  if ! v=$(bao kv get -mount="$mount" -field=id kleidia/audit-anchor 2>&1); then
    case "$v" in
      *"No value found"*) echo 0; return ;;
      *) echo "backup: cannot read the audit anchor: $v" >&2; return 1 ;;
    esac
  fi
  echo "$v"
}

consistent=false
for attempt in 1 2 3; do
  rm -f "$out/postgres.dump" "$out/openbao.snap"
  dump_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  pg_dump --format=custom --file="$out/postgres.dump" --dbname="$DATABASE_URL"
  snap_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  bao operator raft snapshot save "$out/openbao.snap" >/dev/null
  head=$(dump_audit_head "$out/postgres.dump")
  # Read after the snapshot: at least the anchor inside it (anchors only move forward).
  anchor=$(anchor_id)
  if [ -z "$head" ]; then
    echo "backup: no audit_head row in the dump; is DATABASE_URL Kleidia's database?" >&2
    exit 1
  fi
  if [ "$anchor" -le "$head" ]; then
    consistent=true
    break
  fi
  log "attempt $attempt: the audit anchor (row $anchor) moved past the dump's last row ($head) between the dump and the snapshot; taking the pair again"
done

{
  echo "format=kleidia-backup/1"
  echo "order=postgres-then-openbao"
  echo "postgres_dump=postgres.dump"
  echo "postgres_dump_started=$dump_started"
  echo "postgres_dump_sha256=$(sha256sum "$out/postgres.dump" | cut -d' ' -f1)"
  echo "openbao_snapshot=openbao.snap"
  echo "openbao_snapshot_started=$snap_started"
  echo "openbao_snapshot_sha256=$(sha256sum "$out/openbao.snap" | cut -d' ' -f1)"
  echo "audit_head_in_dump=$head"
  echo "audit_anchor_after_snapshot=$anchor"
  echo "audit_consistent=$consistent"
} >"$out/manifest"

if [ "$consistent" = true ]; then
  log "done: $out (audit log rows 1 to $head; the anchor covers rows 1 to $anchor)"
else
  log "done: $out, BUT the anchor in OpenBao covers rows up to $anchor and the dump ends at row $head:"
  log "after a restore, \`kleidia audit verify\` will report rows $((head + 1)) to $anchor as gone."
  log "The escrowed secrets are consistent; take another backup at a quieter moment."
  exit 3
fi
