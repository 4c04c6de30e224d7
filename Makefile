# labctl: the two commands are `make demo` and `make test`.
# Every target installs what it needs: host packages, the venv, the worker.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMPS := .stamps
PYTEST_ARGS ?=

.PHONY: all demo test test-unit host-deps host-deps-images venv venv-test worker fuzz bench clean engine images \
	lint mutants

all: worker venv

$(STAMPS):
	mkdir -p $(STAMPS)

# Everything the tests need (compilers, clang's fuzzer, linters); `make
# demo` needs only what builds the images (host-deps-images: mmdebstrap).
host-deps: | $(STAMPS)
	scripts/host-deps.sh

host-deps-images:
	scripts/host-deps.sh images

# PYTHONWARNINGS hides setuptools' one notice about editable installs
# ("Editable installation. ... be careful with folders of the same name"),
# which says nothing about this project; any other warning still shows.
# The venv with labctl (venv), and with the test tools too (venv-test).
$(STAMPS)/venv: pyproject.toml | $(STAMPS)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	PYTHONWARNINGS='ignore:Editable installation' $(VPY) -m pip install -q -e .
	touch $@

$(STAMPS)/venv-test: $(STAMPS)/venv
	PYTHONWARNINGS='ignore:Editable installation' $(VPY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMPS)/venv

venv-test: $(STAMPS)/venv-test

worker: host-deps
	$(MAKE) -s -C images/worker all sanitize fuzz

# A bounded libFuzzer run over the worker's line parser.
fuzz: worker
	d=$$(mktemp -d) && images/worker/build/fuzz_parse -runs=2000000 -max_len=256 $$d images/worker/fuzz-corpus 2>&1 \
		| tail -n 2; rm -rf $$d

# The engine (started if it does not answer) and the Compose v2 plugin.
engine: venv
	scripts/ensure-docker.sh $(VPY)

# The local base image from the Debian archive (when no registry answers)
# and the lab's three images; cached, rebuilt only when sources change.
images: engine host-deps-images
	$(VENV)/bin/labctl build

# ruff and mypy (configured in pyproject.toml), shellcheck, compose-lint
# (nothing of medium severity or above) and hadolint (nothing at all).
lint: venv-test host-deps
	$(VENV)/bin/ruff check labctl tests bench scripts images
	$(VENV)/bin/mypy
	shellcheck scripts/*.sh .ci/run
	$(VENV)/bin/compose-lint check --fail-on medium compose.yaml compose.lease.yaml
	for f in images/*/Dockerfile; do $(VENV)/bin/hadolint $$f || exit 1; echo "hadolint $$f: clean"; done

test: worker venv-test lint images
	$(VPY) -m pytest $(PYTEST_ARGS)

test-unit: worker venv-test
	$(VPY) -m pytest -m "not docker" $(PYTEST_ARGS)

# No host worker build, no test tools: only the venv, the engine and the images.
demo: venv images
	$(VENV)/bin/labctl demo

bench: worker venv-test
	$(VPY) bench/bench_worker.py

clean:
	$(MAKE) -C images/worker clean
	rm -rf $(VENV) $(STAMPS)

# Deliberate bugs in a scratch copy; the unit suite must fail on each (not part of `make test`).
mutants: worker venv-test
	$(VPY) scripts/mutants.py
