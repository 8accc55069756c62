#!/usr/bin/env bash
# Runs pollgate's fuzz targets (fuzz/, cargo-fuzz with libFuzzer) for a bounded time each and
# fails if any of them finds a crash, a panic, a timeout or an out-of-memory input.
# Installs cargo-fuzz if it is missing. Uses the nightly toolchain when rustup has one;
# otherwise the stable one with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags).
# The checked-in corpus (fuzz/corpus/TARGET) is read, never written: new inputs go to a
# scratch directory that is removed at the end. Crashes are saved in fuzz/artifacts/TARGET/.
# Usage: ./scripts/fuzz.sh [seconds-per-target] [target...]   (default: 60, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(params token download_path config http_framing)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
  echo "fuzzing with $(rustc +nightly --version)"
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
  echo "no nightly toolchain: fuzzing with $(rustc --version) and RUSTC_BOOTSTRAP=1"
fi

# Longest input per target: a request, a token or a config file with room to spare; longer
# inputs only slow the search down. http_framing's seeds hold heads around 8 and 16 KB. Timeouts are seconds per input: the slowest legitimate
# input is a token login (argon2), well under a second.
declare -A max_len=([params]=4096 [token]=4096 [download_path]=1024 [config]=8192 [http_framing]=20000)
timeout_secs=10

# No sanitizer: the crate forbids unsafe code, and without ASan twice as many inputs run in
# the same time. Panics, overflows (debug assertions are on), timeouts and OOM are caught.
sanitizer=${FUZZ_SANITIZER:-none}
echo "== building the fuzz targets (sanitizer: $sanitizer)"
(cd fuzz && cargo "${toolchain[@]}" fuzz build -s "$sanitizer")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
# A run that outlives its time by FUZZ_GRACE seconds is stuck (libFuzzer's own -timeout
# covers one input, not the process): it is killed and counted as a failure.
grace_secs=${FUZZ_GRACE:-120}
for target in "${targets[@]}"; do
  echo "== fuzz $target (${seconds}s) from $(date -u +%H:%M:%S)"
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  # libFuzzer writes new inputs into the first corpus directory only: the scratch one.
  # Progress lines (#N) are left out; the rest is passed on line by line as it comes.
  status=0
  (cd fuzz && timeout --kill-after=10 "$((seconds + grace_secs))" \
      cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$target" \
      "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout="$timeout_secs" -max_len="${max_len[$target]:-4096}" \
      -rss_limit_mb=2048 -dict="dict/$target.dict" -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" </dev/null 2>&1 | grep --line-buffered -v '^#[0-9]' ; exit "${PIPESTATUS[0]}") || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "fuzz $target did not end within $((seconds + grace_secs)) s: killed" >&2
  fi
  [ "$status" -eq 0 ] || failed+=("$target")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "FUZZING FAILED: ${failed[*]}; the inputs are in fuzz/artifacts/<target>/" >&2
  echo "reproduce one with: cd fuzz && cargo +nightly fuzz run -s $sanitizer <target> artifacts/<target>/<file>" >&2
  exit 1
fi
echo "fuzzing: ${targets[*]} ran ${seconds}s each without a crash"
