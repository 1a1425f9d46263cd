# The two commands a new user needs: `make run` (the coordinator with two mock-queue
# participants) and `make test` (the whole suite). Both set up what they need first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Real services the test suite needs; `twopc dev up` starts them (or reuses running
# ones) and `twopc dev down` stops them afterwards.
DEV_SERVICES ?= postgres kafka
# The admin page's browser tests drive Debian's Chromium (never a browser playwright
# downloads); `make test` installs it when it is missing (the machines run as root).
CHROMIUM ?= /usr/bin/chromium

# Every dependency pinned with its hashes (extras and test tools included): `make setup`
# installs exactly this set, and `make lock` makes it again from pyproject.toml.
LOCK := requirements.lock
# The image's set: the same versions, without the test tools.
IMAGE_LOCK := requirements-image.lock
# The tools that install and lock, pinned too so that a second setup is the first one.
PIP_VERSION := 26.3
UV_VERSION := 0.13.10
# One resolution for every platform the image or a developer may run on, for Python 3.11.
LOCK_OPTIONS := --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet

.PHONY: run test setup lock compose-checker chromium services clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# After a change to the dependencies in pyproject.toml: both locks, resolved afresh
# (the image's constrained to the first, so that both pin the same versions).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra all --extra test $(LOCK_OPTIONS) -o $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra all $(LOCK_OPTIONS) -c $(LOCK) -o $(IMAGE_LOCK)

# The compose stack's tests validate compose/compose.yaml with Debian's docker-compose
# (no Docker engine needed); installed here when missing, a no-op when present.
compose-checker:
	@command -v docker-compose >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

run: setup
	$(BIN)/twopc demo

chromium:
	@test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: setup compose-checker chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
ifneq ($(strip $(DEV_SERVICES)),)
	$(BIN)/twopc dev up $(DEV_SERVICES)
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; $(BIN)/twopc dev down $(DEV_SERVICES); exit $$status
else
	$(BIN)/python -m pytest $(PYTEST_ARGS)
endif

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
