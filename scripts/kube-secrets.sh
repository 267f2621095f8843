#!/usr/bin/env bash
# Write the files an overlay's secretGenerator reads, in
# kustomize/overlays/OVERLAY/secrets/ (git-ignored, mode 0600). A file that
# exists is kept, so running it again changes nothing; delete one file and
# run it again to rotate that value (docs/deploy.md, "Rotating secrets").
#   scripts/kube-secrets.sh dev|production
# KLEIDIA_KUSTOMIZE_DIR names another copy of kustomize/ (make image-test).
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=${1:?usage: scripts/kube-secrets.sh OVERLAY}
root=${KLEIDIA_KUSTOMIZE_DIR:-kustomize}
dir=$root/overlays/$overlay/secrets
[ -d "$root/overlays/$overlay" ] || { echo "kube-secrets: no overlay $overlay in $root" >&2; exit 2; }
mkdir -p "$dir"
chmod 700 "$dir"
umask 077

random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
put() { # NAME VALUE: write unless present
  [ -s "$dir/$1" ] || printf '%s' "$2" >"$dir/$1"
}

put postgres-password "$(random)"
put db-owner-password "$(random)"
put db-app-password "$(random)"
# The URLs follow the passwords: rewritten whenever a password changed.
printf 'postgres://kleidia:%s@postgres:5432/kleidia' "$(cat "$dir/db-owner-password")" >"$dir/db-owner-url"
printf 'postgres://kleidia_app:%s@postgres:5432/kleidia' "$(cat "$dir/db-app-password")" >"$dir/db-app-url"
put license-api-token "$(random)"
put metrics-token "$(random)"
# Filled in by a person after `bao operator init` (docs/deploy.md); the
# kleidia-bootstrap Job stays suspended until then.
put openbao-bootstrap-token "replace with the root token from bao operator init"
put openbao-sa.pub "replace with the cluster's service-account signing public key (PEM)"
echo "kube-secrets: $dir ready"
