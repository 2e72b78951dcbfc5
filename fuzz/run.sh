#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly (FUZZ_SECONDS each, default 20) where a nightly toolchain
# is present. Without nightly, the same entry points are still exercised on arbitrary input by
# the `parsers_never_panic` property tests that `cargo test` runs.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-20}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here; the proptest never-panic tests covered the parsers"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" seeds -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=0 2>&1 | tail -n 3
done
