#!/usr/bin/env bash
# `make image-test` (run by `make test`): build the images (scripts/image.sh),
# then start them the way the cluster would, from the rendered dev overlay,
# and use them (scripts/image-test.py says what is checked).
# KLEIDIA_IMAGE_PROFILE=debug (what `make test` sets) builds the images from
# the debug binaries `make test` compiled anyway; `make image-test` alone
# tests the release images of `make image`.
# Ports on 127.0.0.1: KLEIDIA_IMAGE_TEST_PORT (18480) and the next two.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kube-tools.sh
. scripts/kube-tools.sh
export KLEIDIA_CACHE
started=$(date +%s)
scripts/image.sh
built=$(date +%s)

# A copy of kustomize/ with fresh dev secrets: the smoke test fills in the
# bootstrap Secret, and leaves the working tree's alone.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r kustomize/. "$copy/"
rm -rf "$copy"/overlays/*/secrets
KLEIDIA_KUSTOMIZE_DIR=$copy scripts/kube-secrets.sh dev >/dev/null
"$KUBE_VENV/bin/python" scripts/image-test.py "$copy"
echo "image-test: images built in $((built - started))s, smoke test in $(($(date +%s) - built))s"
