# syntax=docker/dockerfile:1
# The auth sidecar's image: `make image` builds it (docker build -t auth-sidecar:<version> .).
#
# Two stages: the build stage installs the package and its dependencies, pinned by the lock (constraints.txt),
# into a virtualenv; the runtime stage is the same slim Python base with only that virtualenv, no pip, no build
# tools. It runs as a numeric non-root user (Kubernetes can check runAsNonRoot against a number, not a name) and
# writes nothing to disk, so a read-only root filesystem works: bytecode is compiled at build time.

# 3.11 by measurement: 3.13 spent 1.09-1.32x the CPU per allowed request (BENCHMARKS.md, "The image's Python").
# The base is pinned by its tag: Python's minor version and Debian's release (their patch releases, security fixes
# among them, come with a rebuild). To pin the exact image, add the digest the tag names today:
#   docker buildx imagetools inspect python:3.11-slim-bookworm      (its "Digest: sha256:..." line)
#   make image PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<that digest>
# or write `@sha256:<digest>` into the ARG below; Docker then refuses any other image under that name (Renovate or
# Dependabot can keep the digest current).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/sidecar
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY sidecar ./sidecar
# The lock pins every runtime dependency (and nothing from the test extra is installed).
RUN /opt/sidecar/bin/pip install --constraint constraints.txt . \
 && /opt/sidecar/bin/python -m compileall -q /opt/sidecar \
 && /opt/sidecar/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="auth-sidecar" \
      org.opencontainers.image.description="Verifies OAuth 2.0 bearer tokens per route and streams allowed calls upstream." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/sidecar /opt/sidecar
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIDECAR_CONFIG=/etc/sidecar/policy.yaml
# The policy is read from /etc/sidecar/policy.yaml: mount it there (the Helm chart mounts its ConfigMap as that
# directory, which keeps hot reload working). No VOLUME: it would only add an anonymous volume to `docker run`.
USER 10001:10001
# 8080: the proxy (the routes); 9901: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9901
ENTRYPOINT ["sidecar", "serve"]
