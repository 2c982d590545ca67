#!/usr/bin/env bash
# The test command: installs what the tests need (a fast no-op once done),
# points the tests at those tools, and runs every test of the workspace.
# Extra arguments go to `cargo test`, e.g. `bash scripts/test.sh -p duraclaw-core`.
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

exec cargo test --workspace "$@"
