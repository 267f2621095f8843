#!/usr/bin/env bash
# Pin the overlays' images to the digests of the images `make image` built
# (target/image/digests): rewrites the block between "# BEGIN images" and
# "# END images" of kustomize/overlays/{dev,production}/kustomization.yaml.
#
#   scripts/kube-digests.sh                 digests of the local images
#   REGISTRY=registry.example.com/kleidia scripts/kube-digests.sh
#       push each image there first (scripts/podman.sh push --digestfile) and
#       pin the pushed digest under that name: what a cluster pulls.
#
# The production overlay takes the production license image (built with
# KLEIDIA_LICENSE_PUBKEY_FILE); without one its license entry stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
digests=target/image/digests
[ -s "$digests" ] || { echo "kube-digests: no $digests: run make image first" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

pinned() { # REF (name:tag) -> "name digest" (pushed when REGISTRY is set)
  local ref=$1 name=${1%%:*} digest
  digest=$(awk -v r="$ref" '$1 == r {print $2}' "$digests")
  [ -n "$digest" ] || return 1
  if [ -n "${REGISTRY:-}" ]; then
    local file
    file=$(mktemp)
    scripts/podman.sh push --digestfile "$file" "localhost/$ref" "$REGISTRY/${ref#kleidia/}" >&2
    digest=$(cat "$file")
    rm -f "$file"
    name=$REGISTRY/${name#kleidia/}
  fi
  echo "$name $digest"
}

write() { # OVERLAY REF…
  local overlay=$1 file=kustomize/overlays/$1/kustomization.yaml block ref
  shift
  block=$(mktemp)
  echo "images:" >"$block"
  for ref in "$@"; do
    if read -r new digest < <(pinned "$ref"); then
      if [ "$new" = "${ref%%:*}" ]; then
        printf '  - {name: %s, digest: "%s"}  # %s\n' "${ref%%:*}" "$digest" "$ref" >>"$block"
      else
        printf '  - {name: %s, newName: %s, digest: "%s"}  # %s\n' "${ref%%:*}" "$new" "$digest" "$ref" >>"$block"
      fi
    else
      # Not built this time: keep the overlay's current line for this image.
      local keep
      keep=$(awk -v n="${ref%%:*}" '/^# BEGIN images/{b=1} /^# END images/{b=0} b && index($0, "{name: " n ",") {print}' "$file")
      [ -n "$keep" ] || { echo "kube-digests: $overlay: $ref was not built and has no line" >&2; exit 1; }
      echo "kube-digests: $overlay: $ref not built; its line stays" >&2
      echo "$keep" >>"$block"
    fi
  done
  awk -v blk="$block" '
    /^# BEGIN images/ {print; while ((getline l < blk) > 0) print l; skip=1; next}
    /^# END images/ {skip=0}
    !skip {print}' "$file" >"$file.new"
  mv "$file.new" "$file"
  rm -f "$block"
  echo "kube-digests: $file pinned"
}

write dev "kleidia/kleidia:$VERSION" "kleidia/kleidia-license:$VERSION-dev-testkey" \
  kleidia/postgres:15 kleidia/openbao:2.7.2
write production "kleidia/kleidia:$VERSION" "kleidia/kleidia-license:$VERSION" \
  kleidia/postgres:15 kleidia/openbao:2.7.2
