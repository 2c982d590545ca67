#!/usr/bin/env bash
# The environment variables that point the tests at the tools
# scripts/install-tools.sh installed. Only tools that are installed are set,
# and a variable that is already set is kept, so a developer can point a test
# at another binary.
#
#   source scripts/tool-env.sh          # export them into this shell
#   eval "$(scripts/tool-env.sh)"       # the same, from any shell
#   scripts/tool-env.sh                 # print them
#
# CLAUDE_BIN        the Claude Code CLI (native binary)
# CLAUDE_MIN_BIN    the oldest Claude Code CLI Duraclaw supports (a launcher)
# NODE22_BIN        Node 22
# WRANGLER_BIN      wrangler, launched with Node 22
# ESBUILD_BIN       the esbuild that came with wrangler
# WASM_OPT_BIN      binaryen's wasm-opt
# WASM_BINDGEN_BIN  wasm-bindgen, matching the lockfile's wasm-bindgen
# WORKER_BUILD_BIN  worker-build
# CHROMIUM_BIN, CHROMEDRIVER_BIN   Debian's Chromium and its driver
# PLAYWRIGHT_CORE   the playwright-core package directory (the browser suite)
# CODEX_ACP_BIN         codex-acp, Codex over the Agent Client Protocol
# CLAUDE_AGENT_ACP_BIN  claude-agent-acp, Claude Code over the Agent Client Protocol (a launcher)
# GEMINI_CLI_BIN        Gemini CLI (a launcher); `gemini --experimental-acp` speaks ACP

# shellcheck source=scripts/install-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/install-tools.sh"

duraclaw_tool_env() {
    local name path
    while read -r name path; do
        [[ -n "${!name:-}" ]] && path=${!name}
        [[ -n "$path" && -e "$path" ]] || continue
        printf 'export %s=%q\n' "$name" "$path"
    done <<EOF
CLAUDE_BIN $(claude_bin)
CLAUDE_MIN_BIN $(claude_min_bin)
NODE22_BIN $(node22_bin)
WRANGLER_BIN $(wrangler_bin)
ESBUILD_BIN $(esbuild_bin)
WASM_OPT_BIN $(wasm_opt_bin)
WASM_BINDGEN_BIN $(wasm_bindgen_bin)
WORKER_BUILD_BIN $(worker_build_bin)
CHROMIUM_BIN $(command -v chromium || true)
CHROMEDRIVER_BIN $(command -v chromedriver || true)
PLAYWRIGHT_CORE $(playwright_core_path)
CODEX_ACP_BIN $(codex_acp_bin)
CLAUDE_AGENT_ACP_BIN $(claude_agent_acp_bin)
GEMINI_CLI_BIN $(gemini_cli_bin)
EOF
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    duraclaw_tool_env
else
    eval "$(duraclaw_tool_env)"
fi
