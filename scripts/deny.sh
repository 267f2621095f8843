#!/usr/bin/env bash
# `make lint`'s supply-chain check: cargo-deny with deny.toml (advisories,
# licenses, duplicate versions, sources).
#
# The RustSec advisory database is a git repository on GitHub. When it cannot
# be fetched (an offline machine), the advisories are checked against the
# copy from the last successful fetch if there is one, and otherwise skipped
# with a message; licenses, bans and sources need no network and always run.
# DENY_REQUIRE_ADVISORIES=1 (CI) turns a skipped advisories check into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DB_DIR=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs

if timeout 120 cargo deny --log-level error fetch db >/dev/null 2>&1; then
  exec cargo deny --locked check --hide-inclusion-graph
fi

if compgen -G "$DB_DIR/*/crates" >/dev/null; then
  echo "deny: the advisory database cannot be fetched; checking against the copy in $DB_DIR" >&2
  exec cargo deny --locked --offline check --hide-inclusion-graph
fi

if [ "${DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
  echo "deny: the advisory database (github.com/rustsec/advisory-db) cannot be fetched and DENY_REQUIRE_ADVISORIES=1" >&2
  exit 1
fi
echo "deny: ADVISORIES NOT CHECKED: the advisory database (github.com/rustsec/advisory-db) cannot be fetched from here and there is no earlier copy in $DB_DIR; checking licenses, bans and sources" >&2
exec cargo deny --locked check --hide-inclusion-graph bans licenses sources
