#!/usr/bin/env bash
# The whole test suite: installs the real programs the tests use, checks
# formatting and lints, then runs every test (unit, property, interop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
