#!/usr/bin/env bash
# Restore a pair made by scripts/backup.sh (docs/openbao.md, "Backup and restore").
#
#   scripts/restore.sh BACKUP_DIR
#
# Before: every `kleidia serve` is stopped. DATABASE_URL names an EMPTY
# database (createdb -O <owner> <name>) and the runtime role exists. OpenBao is
# running with raft storage, initialised and unsealed: the original cluster,
# or a new one initialised just for this (its keys are thrown away).
#
# Environment:
#   DATABASE_URL        the empty database, as the schema owner
#   BAO_ADDR, BAO_TOKEN the target OpenBao and a token that may restore
#                       snapshots (root, or update+sudo on sys/storage/raft/snapshot-force)
#   BAO_UNSEAL_KEY_FILE (optional; test stacks only) unseal keys of the ORIGINAL
#                       cluster, one per line, used when OpenBao sealed itself
#   VERIFY_WITH         (optional) the kleidia binary (path); with the app's configuration
#                       (KLEIDIA_CONFIG or KLEIDIA_* variables) `kleidia audit verify`
#                       runs at the end
#
# Exit status: 0 restored (and, if run, audit verify passed); 3 restored, but
# OpenBao needs the original unseal keys or `audit verify` reported rows the
# dump lacks (it names them); other: failed.
set -euo pipefail

dir=${1:?usage: restore.sh BACKUP_DIR}
: "${DATABASE_URL:?set DATABASE_URL (an empty database, as the schema owner)}"
: "${BAO_ADDR:?set BAO_ADDR}"
: "${BAO_TOKEN:?set BAO_TOKEN}"
export BAO_ADDR BAO_TOKEN

log() { echo "restore: $*" >&2; }
field() { sed -n "s/^$1=//p" "$dir/manifest"; }

[ -f "$dir/manifest" ] || { log "no manifest in $dir"; exit 2; }
[ "$(field format)" = kleidia-backup/1 ] || { log "$dir/manifest: unknown format"; exit 2; }
for part in postgres_dump openbao_snapshot; do
  f="$dir/$(field "$part")"
  if [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$(field "${part}_sha256")" ]; then
    log "$f does not match its checksum in the manifest"
    exit 2
  fi
done

# ---------------------------------------------------------------- PostgreSQL
tables=$(psql --no-psqlrc -qAt --dbname="$DATABASE_URL" \
  -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
if [ "$tables" != 0 ]; then
  log "the database in DATABASE_URL is not empty ($tables tables); drop and re-create it first"
  exit 2
fi
# Owned by the restoring role; the runtime role's grants come with the dump.
pg_restore --exit-on-error --single-transaction --no-owner \
  --dbname="$DATABASE_URL" "$dir/$(field postgres_dump)"
log "PostgreSQL restored (dump started $(field postgres_dump_started), audit log rows 1 to $(field audit_head_in_dump))"

# ------------------------------------------------------------------- OpenBao
# -force: the target's storage is replaced as a whole, including its keyring
# when the snapshot comes from another cluster (a new one after a loss).
bao operator raft snapshot restore -force "$dir/$(field openbao_snapshot)"
log "OpenBao snapshot restored (taken $(field openbao_snapshot_started))"

sealed() { curl -sS ${BAO_CACERT:+--cacert "$BAO_CACERT"} "$BAO_ADDR/v1/sys/seal-status" | grep -q '"sealed": *true'; }
active() { curl -fs ${BAO_CACERT:+--cacert "$BAO_CACERT"} -o /dev/null "$BAO_ADDR/v1/sys/health"; }
# A restore into another cluster seals OpenBao within a moment: it now holds
# the original keyring, which only the original unseal keys open. A restore
# into the cluster the snapshot came from keeps it unsealed.
for _ in $(seq 1 25); do
  if sealed; then break; fi
  sleep 0.2
done
if sealed; then
  if [ -n "${BAO_UNSEAL_KEY_FILE:-}" ]; then
    while read -r key || [ -n "$key" ]; do
      [ -n "$key" ] && bao operator unseal "$key" >/dev/null
    done <"$BAO_UNSEAL_KEY_FILE"
  else
    log "OpenBao is sealed: it holds the original cluster's keyring now."
    log "Unseal it with the ORIGINAL cluster's unseal keys (bao operator unseal), then run"
    log "\`kleidia audit verify\` before starting Kleidia. The new cluster's root token is gone;"
    log "the original cluster's tokens, AppRole secret_ids and policies are back."
    exit 3
  fi
fi
for _ in $(seq 1 300); do
  if active; then break; fi
  sleep 0.2
done
active || { log "OpenBao did not become active after the restore"; exit 1; }
log "OpenBao unsealed and active"

# ----------------------------------------------------------------- audit log
if [ "$(field audit_consistent)" != true ]; then
  log "the manifest says the anchor in OpenBao covers rows up to $(field audit_anchor_after_snapshot)"
  log "but the dump ends at row $(field audit_head_in_dump): audit verify will report the difference"
fi
if [ -n "${VERIFY_WITH:-}" ]; then
  if "$VERIFY_WITH" audit verify; then
    log "audit verify passed"
  else
    log "audit verify reported problems (above). Rows written between the dump and the"
    log "snapshot are lost with this pair; the anchor in OpenBao keeps the evidence."
    exit 3
  fi
else
  log "run \`kleidia audit verify\` with the app's configuration before starting Kleidia"
fi
log "done"
