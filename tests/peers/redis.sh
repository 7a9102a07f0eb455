#!/usr/bin/env bash
# Installs Debian's redis-server when none is on PATH: the rate-limit store tests (tests/support/redis.py) start
# their own servers on loopback ports and stop them; nothing here starts one. Idempotent: a second run does nothing.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/peers/redis.sh: redis-server is not installed and there is no apt-get: install Redis 6 or newer" >&2
    exit 1
fi
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
echo "tests/peers/redis.sh: installing redis-server (Debian) for the rate-limit store tests"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# --no-install-recommends: the server alone (redis-tools is not needed); a package's service is never used here.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
command -v redis-server >/dev/null
