# Two commands for a fresh clone: `make demo` and `make test`. Each builds .venv itself from the lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sidecar demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check sidecar tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The end-to-end suite alone (`make test` runs it too): oidc-provider, httpbin and the Postman walk-through in
# newman. Needs Node.js >= 20.19 and npm; the suite runs `npm ci` in tests/e2e when node_modules is missing or
# older than the lock.
.PHONY: e2e
e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# The container image (needs a Docker engine; not part of `make test`, whose tests check the Dockerfile itself).
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
.PHONY: image
image:
	docker build -t auth-sidecar:$(VERSION) .

# Benchmarks against nginx and Envoy (never part of `make test`): bench/README.md. Installs wrk, nginx (Debian) and
# Envoy, py-spy (bench/.venv) when missing, runs ~10 min, writes BENCHMARKS.md. Options: BENCH_ARGS='--rounds 4'.
.PHONY: bench
bench: $(STAMP)
	bash bench/setup.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# Regenerate constraints.txt (the lock) from the ranges in pyproject.toml.
lock:
	rm -rf /tmp/sidecar-lock-venv
	$(PYTHON) -m venv /tmp/sidecar-lock-venv
	/tmp/sidecar-lock-venv/bin/pip install --quiet --disable-pip-version-check '.[test]'
	/tmp/sidecar-lock-venv/bin/pip freeze --exclude auth-sidecar > constraints.txt
	rm -rf /tmp/sidecar-lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Coverage-guided fuzzing with atheris (never part of `make test`): paths, bearer, headers, tokens and upstream
# responses, FUZZ_SECONDS in all (default 600), split evenly; fails on any finding. atheris is installed here only
# (fuzz/requirements.txt).
# Working corpus and findings: build/fuzz/. Details: fuzz/__main__.py.
FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -r fuzz/requirements.txt
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m fuzz

# Mutation testing with mutmut 3 (never part of `make test`): mutates the security-critical modules listed in
# pyproject.toml's [tool.mutmut], runs the in-process tests that reach each mutant, writes the score per module and
# every survivor to MUTATION.md (its "Equivalent mutants" section is hand-maintained). MUTATE_CHILDREN parallel
# test processes (default 2); MUTATE_ARGS: mutmut name patterns, e.g. 'sidecar.paths*'. Work directory: mutants/.
# Exits 1 when a module is under 90%. mutmut is installed here only (tools/mutate-requirements.txt).
MUTATE_CHILDREN ?= 2
.PHONY: mutate
mutate: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -r tools/mutate-requirements.txt
	MUTATE_CHILDREN=$(MUTATE_CHILDREN) $(BIN)/python tools/mutate.py $(MUTATE_ARGS)
