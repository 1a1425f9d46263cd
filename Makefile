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

.PHONY: run test setup services clean chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $@

run: setup
	$(BIN)/twopc demo

chromium:
	@test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: setup chromium
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
