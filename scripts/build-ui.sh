#!/usr/bin/env bash
# Builds the browser UI (examples/duraclaw-full/ui) into ui/dist.
#
# ui/dist is committed, so `cargo build` needs no Node: run this after
# changing anything under ui/ and commit the result.
#
#   scripts/build-ui.sh          install the locked dependencies (npm ci), build ui/dist
#   scripts/build-ui.sh --check  build into a temporary directory and fail if it
#                                differs from the committed ui/dist
#
# Needs Node 20.19+ (or 22.12+) and npm. Idempotent: the same sources give the
# same files.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ui="$root/examples/duraclaw-full/ui"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "build-ui: node and npm are needed to build the UI (the committed ui/dist works without them)" >&2
  exit 1
fi

cd "$ui"
npm ci --no-audit --no-fund --loglevel=error
node --test --test-reporter=dot test/

if [ "$check" = 1 ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  npx --no-install vite build --logLevel warn --outDir "$out" --emptyOutDir
  if diff -r "$out" dist >/dev/null; then
    echo "build-ui: ui/dist matches a fresh build"
  else
    echo "build-ui: ui/dist is stale; run scripts/build-ui.sh and commit ui/dist" >&2
    diff -r "$out" dist | head -20 >&2 || true
    exit 1
  fi
else
  npx --no-install vite build --logLevel warn
  echo "build-ui: wrote $(cd "$ui/dist" && find . -type f | wc -l) files to examples/duraclaw-full/ui/dist ($(du -sk "$ui/dist" | cut -f1) KiB)"
fi
