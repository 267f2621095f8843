#!/usr/bin/env bash
# `make fuzz`: run each cargo-fuzz target for FUZZ_SECONDS (default 60), then
# minimise what it found into the committed corpus (fuzz/corpus/<target>/).
# A crash stops the run: the input is in fuzz/artifacts/<target>/; fix the
# code, then keep the input in fuzz/regressions/<target>/ (replayed by
# `make test`).
#
#   FUZZ_SECONDS=300 make fuzz                 longer runs
#   FUZZ_TARGETS="ticket vyk_apdu" make fuzz   some targets only
#   FUZZ_SANITIZER=address make fuzz           with AddressSanitizer (slower)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh fuzz

SECS=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-none}
# 16 codegen units: a much shorter build on a small machine, slightly slower runs.
BUILD=(--sanitizer "$SANITIZER" --codegen-units 16)
ALL_TARGETS="ticket license_doc vyk_apdu agent_tlv csr_attestation json_bodies"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}

# cargo-fuzz passes -Z flags. A nightly toolchain if rustup has one, else the
# installed stable compiler with its unstable features unlocked.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi

cd fuzz
for t in $TARGETS; do
  echo "fuzz: $t for ${SECS}s"
  mkdir -p "corpus/$t" "scratch/$t"
  # New inputs go to scratch/ first; the committed corpus only receives the
  # minimised set.
  "${FUZZ[@]}" run "${BUILD[@]}" "$t" "scratch/$t" "corpus/$t" -- \
    -max_total_time="$SECS" -max_len=8192 -timeout=60 -rss_limit_mb=2048 -print_final_stats=1
  # Minimise corpus + new inputs into a fresh directory, which becomes the
  # corpus: a greedy set cover of the edges reached (-use_counters=0: edges,
  # not hit counts), so the committed corpus stays small.
  rm -rf "scratch/$t.min" && mkdir -p "scratch/$t.min"
  "${FUZZ[@]}" run "${BUILD[@]}" "$t" "scratch/$t.min" "corpus/$t" "scratch/$t" -- \
    -set_cover_merge=1 -use_counters=0 -max_len=8192 -timeout=60 >"scratch/$t.log" 2>&1 ||
    { cat "scratch/$t.log" >&2; echo "fuzz: minimising the $t corpus failed" >&2; exit 1; }
  rm -rf "corpus/$t" "scratch/$t.log"
  mv "scratch/$t.min" "corpus/$t"
  rm -rf "scratch/$t"
  echo "fuzz: $t corpus: $(find "corpus/$t" -type f | wc -l) inputs"
done
