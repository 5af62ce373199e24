#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside bytes (issue 22).
# The targets' bodies are in fuzz/src/lib.rs; fuzz/fuzz_targets/<t>.rs are
# cargo-fuzz's entry points to them.
#
#   scripts/fuzz.sh replay            replay fuzz/corpus and fuzz/regressions
#                                     through the targets on stable (what
#                                     `cargo test` runs in CI)
#   scripts/fuzz.sh brief [secs]      fuzz each target for secs (default 15)
#   scripts/fuzz.sh long <minutes> [target...]
#                                     fuzz each target (default: all) for
#                                     <minutes>, then merge what it found into
#                                     the minimized corpus fuzz/corpus/<t>/
#   scripts/fuzz.sh seed [ccfd-bt]    make seeds from real programs
#                                     (fuzz/make_seeds.py) and merge them in
#
# brief, long and seed need the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); without them they say so and exit 0.
# One libFuzzer process at a time, niced: the machine is shared. Working
# corpora (fuzz/work/), crash artifacts (fuzz/artifacts/) and the build
# (fuzz/target/) are not committed; a crash found becomes a file under
# fuzz/regressions/<t>/ with the fix of the parser.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(bencode metainfo magnet wire extended tracker_http tracker_udp tracker_server coded http1 krpc utp resume)
# Bounds every run is held to: no input may take 10 s, use 512 MB, or
# allocate 128 MB at once.
LIMITS=(-rss_limit_mb=512 -malloc_limit_mb=128 -timeout=10)
# Release build with debug assertions: overflow checks catch arithmetic
# the stable release build would wrap.
BUILD=(-O -a)

have_fuzz() {
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        echo "fuzz.sh: no nightly toolchain; skipping ($1)"
        return 1
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: cargo-fuzz not installed (cargo install cargo-fuzz); skipping ($1)"
        return 1
    fi
}

build() {
    (cd fuzz && nice -n 15 cargo +nightly fuzz build "${BUILD[@]}")
}

bin() {
    echo "fuzz/target/x86_64-unknown-linux-gnu/release/$1"
}

# fuzz_one <target> <seconds>: one libFuzzer process; prints a summary line
# (target, CPU seconds, executions, cov, ft, working corpus size, crashes).
fuzz_one() {
    local t=$1 secs=$2
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    local log="fuzz/work/$t.log" rc=0
    /usr/bin/time -f "%U %S" -o "fuzz/work/$t.time" \
        nice -n 15 "$(bin "$t")" "fuzz/work/$t" "fuzz/corpus/$t" \
        -max_total_time="$secs" "${LIMITS[@]}" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
    local cpu execs cov ft corp crashes
    cpu=$(awk '{printf "%.0f", $1 + $2}' "fuzz/work/$t.time")
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    corp=$(find "fuzz/work/$t" -type f | wc -l)
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\trc=%s\n' "$t" "$cpu" "$execs" "$cov" "$ft" "$corp" "$crashes" "$rc" | tee -a fuzz/work/summary.tsv
    return "$rc"
}

# minimize <target> <dir...>: merge the dirs and the corpus into a new minimized corpus.
minimize() {
    local t=$1
    shift
    local new="fuzz/work/$t.merged"
    rm -rf "$new"
    mkdir -p "$new"
    nice -n 15 "$(bin "$t")" -merge=1 "${LIMITS[@]}" "$new" "fuzz/corpus/$t" "$@" >"fuzz/work/$t.merge.log" 2>&1
    rm -rf "fuzz/corpus/$t"
    mv "$new" "fuzz/corpus/$t"
    echo "$t: corpus $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
}

mkdir -p fuzz/work
mode=${1:-}
case "$mode" in
replay)
    nice -n 15 cargo test --release --test fuzz_replay
    ;;
brief)
    secs=${2:-15}
    have_fuzz brief || exit 0
    build
    failed=()
    for t in "${TARGETS[@]}"; do
        fuzz_one "$t" "$secs" || failed+=("$t")
    done
    if ((${#failed[@]})); then
        echo "fuzz.sh: crashes in ${failed[*]}; inputs under fuzz/artifacts/" >&2
        exit 1
    fi
    ;;
long)
    minutes=${2:?usage: scripts/fuzz.sh long <minutes> [target...]}
    shift 2
    have_fuzz long || exit 0
    build
    targets=("$@")
    ((${#targets[@]})) || targets=("${TARGETS[@]}")
    echo -e "target\tcpu_s\texecs\tcov\tft\tcorpus\tcrashes" | tee -a fuzz/work/summary.tsv
    failed=()
    for t in "${targets[@]}"; do
        fuzz_one "$t" $((minutes * 60)) || failed+=("$t")
        minimize "$t" "fuzz/work/$t"
    done
    if ((${#failed[@]})); then
        echo "fuzz.sh: crashes in ${failed[*]}; inputs under fuzz/artifacts/" >&2
        exit 1
    fi
    ;;
seed)
    have_fuzz seed || exit 0
    build
    rm -rf fuzz/work/seeds
    python3 fuzz/make_seeds.py fuzz/work/seeds "${2:-target/release/ccfd-bt}"
    for t in "${TARGETS[@]}"; do
        minimize "$t" "fuzz/work/seeds/$t"
    done
    ;;
*)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
