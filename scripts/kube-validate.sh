#!/usr/bin/env bash
# `make kube-validate`: render every overlay with kubectl kustomize, validate
# the result against the Kubernetes schemas (kubernetes-validate --strict),
# run checkov's Kubernetes policies (zero failed checks; a skipped check
# carries its reason beside it, as a checkov.io/skip annotation), and check
# Kleidia's own invariants (scripts/kube-invariants.py, with its self-test).
# The tools come from scripts/install-deps.sh (a venv, pinned versions).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kube-tools.sh
. scripts/kube-tools.sh
K8S_VERSION=${KUBE_VALIDATE_VERSION:-1.32}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
for dir in kustomize/overlays/*/; do
  overlay=$(basename "$dir")
  # The secretGenerator's files (git-ignored): made if missing, never changed.
  scripts/kube-secrets.sh "$overlay" >/dev/null
  rendered=$out/$overlay.yaml
  kubectl kustomize "$dir" >"$rendered"
  echo "kube-validate: $overlay: $(grep -c '^kind:' "$rendered") objects rendered"
  "$KUBE_VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$rendered" || fail=1
  # --skip-download: no network; the policies ship with the package.
  if ! "$KUBE_VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    -f "$rendered" >"$out/$overlay.checkov" 2>&1; then
    cat "$out/$overlay.checkov"
    fail=1
  fi
  grep -E "^(Passed|Failed) checks" "$out/$overlay.checkov" | sed "s/^/kube-validate: $overlay: checkov: /" || true
  "$KUBE_VENV/bin/python" scripts/kube-invariants.py "$rendered" --pinned || fail=1
done
"$KUBE_VENV/bin/python" scripts/kube-invariants.py --self-test "$out/production.yaml" || fail=1
if [ "$fail" -ne 0 ]; then
  echo "kube-validate: FAILED" >&2
  exit 1
fi
echo "kube-validate: every overlay renders, validates and passes checkov and the invariants"
