#!/usr/bin/env bash
# podman with the storage and runtime settings `make image` uses, so its
# images can be listed, pushed or run by hand:
#   scripts/podman.sh images
#   scripts/podman.sh push localhost/kleidia/kleidia:0.1.0 REGISTRY/kleidia/kleidia:0.1.0
# Storage: vfs under $KLEIDIA_PODMAN_ROOT (overlay needs kernel support the
# CI sandbox lacks); runtime: runc with cgroupfs (crun refuses hybrid cgroups).
set -euo pipefail
KLEIDIA_CACHE=${KLEIDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kleidia}
KLEIDIA_PODMAN_ROOT=${KLEIDIA_PODMAN_ROOT:-$KLEIDIA_CACHE/podman}
mkdir -p "$KLEIDIA_PODMAN_ROOT"
# Default ulimits for every container (the sandbox refuses to raise them).
conf=$KLEIDIA_PODMAN_ROOT/containers.conf
[ -f "$conf" ] || printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n' >"$conf"
export CONTAINERS_CONF=$conf
exec podman --root "$KLEIDIA_PODMAN_ROOT/storage" --runroot "$KLEIDIA_PODMAN_ROOT/run" \
  --storage-driver vfs --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
