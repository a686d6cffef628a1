#!/usr/bin/env bash
# Installs Debian's packages the tests need when missing: chromium (browser tests; never a
# downloaded browser build) and redis-server (the Redis session store tests).
set -euo pipefail
PKGS=()
if ! command -v chromium >/dev/null 2>&1; then PKGS+=(chromium); fi
if ! command -v redis-server >/dev/null 2>&1; then PKGS+=(redis-server); fi
if [ "${#PKGS[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian's ${PKGS[*]} for the tests..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PKGS[@]}" >/dev/null
