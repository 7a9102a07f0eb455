# Two commands for a fresh clone: `make demo` and `make test`. Each builds .venv itself from the lock
# (constraints.txt, one universal lock for Python 3.11, 3.12 and 3.13). PYTHON=python3.13 picks the interpreter
# (a pyenv-installed one is found even when pyenv does not enable it here); tools/find-python says clearly when
# there is none.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Python writes its bytecode caches (__pycache__, git-ignored) while testing even where the environment says not to
# (PYTHONDONTWRITEBYTECODE, set on some machines, this kind of machine among them): without them every sidecar process
# a test starts compiles every module it imports again, and every pytest-xdist worker rewrites every test module
# again -- a quarter of each sidecar start, minutes of CPU over `make test`.
test unit test-pythons e2e: export PYTHONDONTWRITEBYTECODE :=
# The Pythons we test on. `make test` runs the whole suite on PYTHON and the in-process suite (FAST_TESTS) on each
# of the others, each in its own .venv-3.X, with a tenth of each property test's examples (tests/support/examples.py);
# OTHER_PYTHONS= (empty) skips them for a quicker local run.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
PYTHON_MINOR := $(shell python=$$(tools/find-python $(PYTHON) 2>/dev/null) && $$python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
OTHER_PYTHONS ?= $(filter-out $(PYTHON_MINOR),$(SUPPORTED_PYTHONS))
FAST_TESTS := tests --ignore=tests/integration --ignore=tests/ingress --ignore=tests/e2e --ignore=tests/chart -p no:cacheprovider -q
# The suites that start sidecar processes and their peers (nginx, Caddy, Envoy, Redis, oidc-provider, npm).
PROCESS_TESTS := tests/integration tests/ingress tests/e2e tests/chart -p no:cacheprovider -q
# The in-process suite on every core (pytest-xdist): its servers take ephemeral ports, each test its own temp dir.
XDIST := -n auto
# `make test` runs every test but those marked `alone` in one pytest-xdist run of TEST_WORKERS workers: the process
# suites spend most of their time waiting (on a process starting, a timeout, a peer), and the in-process tests' CPU
# fills that time. Each module stays on one worker (loadscope), so a module's own sidecar, npm ci, Redis or ingress
# starts once (tests/conftest.py says which modules are handed out first); loopback ports cannot collide between
# workers (free_closed_port in tests/support/servers.py). The tests marked `alone` (a bound on time is what they
# check) then run one at a time with nothing else running.
TEST_WORKERS ?= 4

.PHONY: demo test lint typecheck unit lock clean venv venv-runtime test-pythons venvs-pythons peers

# The test venv is installed by the pinned uv (`make uv`): the same lock, a minute less on a fresh clone than pip.
venv: uv
	UV=$(LOCK_VENV)/bin/uv tools/venv $(PYTHON) $(VENV) test

venv-runtime:
	tools/venv $(PYTHON) $(VENV) runtime

demo: venv-runtime
	$(BIN)/sidecar demo

# Branch coverage of sidecar/ ([tool.coverage] in pyproject.toml) is measured across both runs, the xdist workers
# and the sidecar processes included; the second run prints the number and fails under fail_under.
# The checks, the peers' installs and the other Pythons' venvs run side by side: mypy takes one core, the installs
# mostly wait on the disk and the network. The other Pythons' in-process suites run beside the main run
# (tools/test-pythons), in the time its process suites spend waiting; the tests marked `alone` run last.
test: venv
	$(MAKE) --no-print-directory -j 4 --output-sync=target lint typecheck peers venvs-pythons
	tools/test-pythons "$(OTHER_PYTHONS)" $(FAST_TESTS) -- \
	    $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m 'not alone' tests \
	    -p no:cacheprovider -q --cov --cov-report= --cov-fail-under=0
	$(BIN)/pytest -m alone $(PROCESS_TESTS) --cov --cov-append --cov-report=term:skip-covered

# The real peers the process suites start: nginx and Redis from Debian when missing (Caddy, Envoy come with .venv).
peers:
	bash tests/peers/install.sh
	bash tests/peers/redis.sh  # redis-server for the rate-limit store tests, installed when missing

# The venvs of the other Pythons hold what the in-process suite needs (tools/venv's `unit` level), installed from the
# same lock by the pinned uv (`make uv`): seconds where pip takes a minute of CPU per venv.
venvs-pythons: uv
	@for version in $(OTHER_PYTHONS); do \
	    UV=$(LOCK_VENV)/bin/uv tools/venv python$$version .venv-$$version unit || exit 1; \
	done

# The in-process suite on each other Python, all at once, with a tenth of each property test's examples.
test-pythons: venvs-pythons
	tools/test-pythons "$(OTHER_PYTHONS)" $(FAST_TESTS)

# The fast in-process tests (no sidecar process, no peers) on every core, a tenth of each property test's examples:
# under a minute. `make test` runs them in full.
unit: venv
	PROPERTY_EXAMPLES_SCALE=0.1 $(BIN)/pytest $(XDIST) $(FAST_TESTS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check sidecar tests
	$(BIN)/lint-imports  # the layers' import directions and no cycles: [tool.importlinter] in pyproject.toml

typecheck: venv
	$(BIN)/mypy

# The end-to-end suite alone (`make test` runs it too): oidc-provider, httpbin and the Postman walk-through in
# newman. Needs Node.js >= 20.19 and npm; the suite runs `npm ci` in tests/e2e when node_modules is missing or
# older than the lock.
.PHONY: e2e
e2e: venv
	$(BIN)/pytest tests/e2e

# The container image (needs a Docker engine; not part of `make test`, whose tests check the Dockerfile itself).
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> builds on exactly that base image (see the Dockerfile).
PYTHON_IMAGE ?=
.PHONY: image
image:
	docker build $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) )-t auth-sidecar:$(VERSION) .

# Benchmarks against nginx and Envoy (never part of `make test`): bench/README.md. Installs wrk, nginx (Debian) and
# Envoy, py-spy (bench/.venv) when missing, runs ~10 min, writes BENCHMARKS.md. Options: BENCH_ARGS='--rounds 4'.
.PHONY: bench
bench: venv
	bash bench/setup.sh
	@# The image's Python is chosen by measurement (BENCH_ARGS='--only pythons'): the sidecar on each candidate.
	for version in 3.11 3.13; do tools/venv python$$version .venv-$$version runtime || exit 1; done
	$(BIN)/python -m bench $(BENCH_ARGS)

# Regenerate constraints.txt, the lock: one universal lock (environment markers where a Python needs another
# version) resolved for Python 3.11 and newer by uv, pinned here. The current pins are kept where they still
# satisfy pyproject.toml, so the same inputs give the same file; LOCK_ARGS=--upgrade takes the newest releases.
UV_VERSION := 0.13.9
LOCK_VENV := build/lock-venv
# uv itself, pinned, in its own venv: `make lock` resolves with it, `make venv` and `make test-pythons` install with it.
.PHONY: uv
uv:
	@$(LOCK_VENV)/bin/uv --version 2>/dev/null | grep -qF ' $(UV_VERSION)' || { rm -rf $(LOCK_VENV) && \
	    $$(tools/find-python $(PYTHON)) -m venv $(LOCK_VENV) && \
	    $(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }

lock: uv
	$(LOCK_VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --extra test \
	    --custom-compile-command 'make lock' $(LOCK_ARGS) pyproject.toml --output-file constraints.txt

clean:
	rm -rf $(VENV) .venv-3.* build/lock-venv .pytest_cache .mypy_cache .ruff_cache

# Coverage-guided fuzzing with atheris (never part of `make test`): paths, bearer, headers, tokens, upstream
# responses and JWKS/discovery documents (jwks), FUZZ_SECONDS in all (default 600), split evenly; fails on any
# finding. atheris is installed here only (fuzz/requirements.txt).
# Working corpus and findings: build/fuzz/. Details: fuzz/__main__.py.
FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: venv
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -r fuzz/requirements.txt
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m fuzz

# Mutation testing with mutmut 3 (never part of `make test`): mutates the security-critical modules listed in
# pyproject.toml's [tool.mutmut], runs the in-process tests that reach each mutant, writes the score per module and
# every survivor to MUTATION.md (its "Equivalent mutants" section is hand-maintained). MUTATE_CHILDREN parallel
# test processes (default 2); MUTATE_ARGS: mutmut name patterns, e.g. 'sidecar.edge.paths*'. Work directory: mutants/.
# Exits 1 when a module is under 90%. mutmut is installed here only (tools/mutate-requirements.txt).
# MUTATE_ONLY='sidecar/edge/forward_auth.py sidecar/upstream/host_key.py': those modules' mutants only, all run again;
# MUTATION.md keeps the other modules' rows. MUTATE_ARGS=--survivors: only the mutants no test has killed yet run
# again (after adding tests).
MUTATE_CHILDREN ?= 2
MUTATE_ONLY ?=
.PHONY: mutate
mutate: venv
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -r tools/mutate-requirements.txt
	MUTATE_CHILDREN=$(MUTATE_CHILDREN) MUTATE_ONLY="$(MUTATE_ONLY)" $(BIN)/python tools/mutate.py $(MUTATE_ARGS)
