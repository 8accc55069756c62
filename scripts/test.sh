#!/usr/bin/env bash
# Runs pollgate's whole test suite on a fresh machine: installs what is missing, then runs
# formatting and lint checks, the unit and integration tests, and compiles the benchmarks.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is required (install Rust with rustup) and was not found" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test (unit, integration, doc tests; benchmarks compiled)"
cargo test --all-targets --quiet
cargo test --doc --quiet
