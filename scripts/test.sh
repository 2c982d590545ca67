#!/usr/bin/env bash
# The test command: installs what the tests need (a fast no-op once done),
# points the tests at those tools, and runs every test of the workspace.
# Extra arguments go to `cargo test`, e.g. `bash scripts/test.sh -p duraclaw-core`.
#
# Without arguments every test binary of `cargo test --workspace` is built
# once, then the binaries run in two lanes at the same time (most of their
# time is spent waiting on wrangler, Chromium and the CLI, so the lanes
# overlap well even on two cores):
#   cloudflare  duraclaw-cf's binaries, then the duraclaw-full test files
#               in CF_LANE below (the Worker under `wrangler dev`);
#   local       every other binary (a new test file lands here), then the
#               doc tests.
# A binary runs as `cargo test` runs it (in its package's directory). Each
# lane runs all its binaries even after a failure; its output is printed
# whole when it ends, then the failed binaries. TEST_LANES=1 (or a machine
# without jq or bash 5.1) runs the plain `cargo test --workspace` instead.
#
# PROPTEST_CASES sets the property tests' case count (default 256).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# .ci/run installs the tools as a step of its own and says so here.
if [[ -z "${DURACLAW_TOOLS_INSTALLED:-}" ]]; then
    scripts/install-tools.sh test >/dev/null
fi
# shellcheck source=scripts/tool-env.sh
source scripts/tool-env.sh
export PROPTEST_CASES="${PROPTEST_CASES:-256}"

# The lanes need jq and bash 5.1 (`wait -n -p`).
if [[ $# -gt 0 || "${TEST_LANES:-2}" == 1 ]] || ! command -v jq >/dev/null ||
    ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
    exec cargo test --workspace "$@"
fi

# duraclaw-full's test files in the cloudflare lane, in this order after
# duraclaw-cf's binaries. The browser suite on Cloudflare, the most
# timing-bound, runs last, when the local lane has mostly ended; the
# Cloudflare fault run and duraclaw-cf's D1 auth and Durable Object
# conformance tests are in the local lane, to even the lanes out (each
# `wrangler dev` has ports of its own, so the lanes' wranglers can overlap).
CF_LANE=(cloudflare cloudflare_api cloudflare_push cloudflare_browser)
CF_IN_LOCAL_LANE=(d1_auth do_conformance)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build once, exactly as `cargo test --workspace` would (another package
# selection would resolve other features and build again), and list the
# test binaries: package dir, target kind, name, source, executable.
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$work/build.json"
jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
    | [(.manifest_path | sub("/Cargo.toml$"; "")), (.target.kind | join(",")),
       .target.name, .target.src_path, .executable] | @tsv' "$work/build.json" |
    sort >"$work/binaries"
: >"$work/cloudflare.list"
: >"$work/local.list"
: >"$work/cf-full"
while IFS=$'\t' read -r dir kind name src exe; do
    line=$(printf '%s\t%s\t%s\t%s' "$dir" "$kind" "$src" "$exe")
    if [[ $dir == */crates/duraclaw-cf && " ${CF_IN_LOCAL_LANE[*]} " != *" $name "* ]]; then
        echo "$line" >>"$work/cloudflare.list"
    elif [[ $dir == */examples/duraclaw-full && $kind == test && " ${CF_LANE[*]} " == *" $name "* ]]; then
        printf '%s\t%s\n' "$name" "$line" >>"$work/cf-full"
    else
        echo "$line" >>"$work/local.list"
    fi
done <"$work/binaries"
for name in "${CF_LANE[@]}"; do
    grep "^$name"$'\t' "$work/cf-full" | cut -f2- >>"$work/cloudflare.list" ||
        { echo "CF_LANE names $name, not a test of duraclaw-full" >&2; exit 1; }
done

# Runs the binaries listed in file $1; fails naming those that failed.
run_lane() {
    local dir kind src exe shown failed=()
    while IFS=$'\t' read -r dir kind src exe; do
        shown=${src#"$dir"/}
        [[ $kind == test ]] || shown="unittests $shown"
        echo "     Running $shown ($exe)"
        (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe") </dev/null || failed+=("$shown in $dir")
    done <"$1"
    if [[ ${#failed[@]} -gt 0 ]]; then
        printf 'FAILED: %s\n' "${failed[@]}"
        return 1
    fi
}

start=$SECONDS
run_lane "$work/cloudflare.list" >"$work/cloudflare.out" 2>&1 &
cloudflare_pid=$!
(
    rc=0
    run_lane "$work/local.list" || rc=1
    cargo test --workspace --doc || rc=1
    exit "$rc"
) >"$work/local.out" 2>&1 &
local_pid=$!

# Prints a lane's output once it has ended.
report() {
    local lane=$1 rc=$2
    echo
    echo "--- lane $lane: $(wc -l <"$work/$lane.list") binaries, exit $rc after $((SECONDS - start))s"
    cat "$work/$lane.out"
    [[ $rc -eq 0 ]] || status=1
}
status=0 rc=0
wait -n -p first "$cloudflare_pid" "$local_pid" || rc=$?
if [[ $first == "$cloudflare_pid" ]]; then
    report cloudflare "$rc"
    rc=0
    wait "$local_pid" || rc=$?
    report local "$rc"
else
    report local "$rc"
    rc=0
    wait "$cloudflare_pid" || rc=$?
    report cloudflare "$rc"
fi
exit "$status"
