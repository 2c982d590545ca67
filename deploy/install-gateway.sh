#!/usr/bin/env bash
# Installs the Duraclaw gateway as a systemd service on a Linux VPS.
#
#   sudo deploy/install-gateway.sh [path/to/duraclaw-gateway]
#
# Idempotent: re-running upgrades the binary and keeps the configuration and
# the secret. Build the binary first with
#   cargo build --release -p duraclaw-gateway
set -euo pipefail

bin=${1:-target/release/duraclaw-gateway}
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
[ -x "$bin" ] || { echo "no gateway binary at $bin; build it with: cargo build --release -p duraclaw-gateway" >&2; exit 1; }

id duraclaw >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/duraclaw --shell /usr/sbin/nologin duraclaw
install -d -o duraclaw -g duraclaw -m 0700 /var/lib/duraclaw /var/lib/duraclaw/gateway
install -d -m 0755 /etc/duraclaw
install -m 0755 "$bin" /usr/local/bin/duraclaw-gateway

env=/etc/duraclaw/gateway.env
if [ ! -f "$env" ]; then
  secret=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 43)
  umask 077
  cat >"$env" <<CONF
# The bearer secret the orchestrator sends; keep it private.
CC_GATEWAY_SECRET=$secret
# Loopback only; reach it through a Cloudflare Tunnel or an SSH tunnel.
CC_GATEWAY_BIND=127.0.0.1:9877
# Which worktrees sessions may run in (comma-separated globs).
WORKTREE_PATTERNS=/data/projects/*
DURACLAW_GATEWAY_DATA_DIR=/var/lib/duraclaw/gateway
# The Claude Code CLI and its login (run \`sudo -u duraclaw claude\` once).
CLAUDE_BIN=/usr/local/bin/claude
CLAUDE_CONFIG_DIR=/var/lib/duraclaw/.claude
DURACLAW_MODEL=sonnet
# Optional: resolve unanswered approvals as "expired" after N seconds.
#DURACLAW_APPROVAL_TIMEOUT_SECS=3600
RUST_LOG=info
CONF
  chmod 0600 "$env"
  echo "wrote $env with a new secret; copy CC_GATEWAY_SECRET to the orchestrator"
fi

install -m 0644 "$here/duraclaw-cc-gateway.service" /etc/systemd/system/duraclaw-cc-gateway.service
systemctl daemon-reload
systemctl enable duraclaw-cc-gateway.service
systemctl restart duraclaw-cc-gateway.service
systemctl --no-pager --lines=5 status duraclaw-cc-gateway.service || true
