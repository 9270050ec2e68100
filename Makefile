# Quick start: `make run` and `make test` on a fresh Debian machine (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
APT_STAMP := .apt-installed
CONFIG ?= config/intercom.yaml
APT_PACKAGES := chromium libasound2-dev libasound2-plugins alsa-utils postgresql iproute2 systemd python3-venv python3-dev gcc espeak-ng nodejs coturn nftables haproxy

# The boot test: a Debian root from debootstrap, booted with systemd-nspawn; arm64 under qemu.
FIELD_APT_PACKAGES := debootstrap systemd-container qemu-user-static binfmt-support

.PHONY: setup system-deps run test check-picamera2 test-field test-arm64 field-deps lint fmt clean

setup: $(STAMP)

# System packages: ALSA headers for pyalsaaudio, Chromium for the browser tests,
# PostgreSQL for the fleet-store tests, HAProxy for the fleet tests and bench/fleet.py
# (deploy/haproxy.cfg), iproute2 for network namespaces, espeak-ng for the
# speech the echo-cancellation tests and benchmark play, Node.js and npm (Debian's npm
# package, unless the Node.js installed already brings npm) for the test that runs
# Stream's JavaScript client SDK against the server and for axe-core (tests/js).
system-deps: $(APT_STAMP)
$(APT_STAMP):
	@if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

$(STAMP): pyproject.toml $(APT_STAMP)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(VENV)/bin/appliance run --config $(CONFIG)

# Stream's JavaScript client SDK, ws and axe-core (the console's accessibility checks), pinned by
# tests/js/package-lock.json.
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json $(APT_STAMP)
	cd tests/js && npm ci --no-audit --no-fund
	@touch $@

test: $(STAMP) $(JS_STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Opt-in, needs the internet: the newest picamera2 on the package index still has the parameter
# lists our copy in tests/media/picamera2_api.py holds (make test checks our calls against the copy).
check-picamera2: $(STAMP)
	APPLIANCE_NETWORK_CHECKS=1 $(VENV)/bin/pytest -q -p no:cacheprovider -m network tests/media/test_sources.py

field-deps:
	@missing=""; for p in $(FIELD_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# Needs root. Roots and wheels are cached in /var/cache/appliance-field (APPLIANCE_FIELD_CACHE).
test-field: $(STAMP) field-deps
	APPLIANCE_FIELD=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/field/test_field.py $(PYTEST_ARGS)

test-arm64: $(STAMP) field-deps
	APPLIANCE_FIELD=1 $(VENV)/bin/pytest -q -p no:cacheprovider -s tests/field/test_arm64.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/ruff format --check appliance tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format appliance tests bench
	$(VENV)/bin/ruff check --fix appliance tests bench

clean:
	rm -rf $(VENV) $(APT_STAMP) tests/js/node_modules .pytest_cache .mypy_cache .ruff_cache
