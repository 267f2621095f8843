# Sourced: where the pinned manifest tools live, installed by
# scripts/install-deps.sh into their own venv (they pin many Python packages
# of their own; the system's Python stays as it is).
KLEIDIA_CACHE=${KLEIDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kleidia}
KUBE_VENV=${KUBE_VENV:-$KLEIDIA_CACHE/kube-venv}
# Versions: bump deliberately, read checkov's new failures, then commit.
KUBE_TOOLS=(checkov==3.3.30 kubernetes-validate==1.37.0)
