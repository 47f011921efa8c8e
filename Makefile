# The two set-up commands of the README:
#   make run   - install into .venv, then run the API and a worker against the local servers
#   make test  - install into .venv (with dev tools), then lint, type-check and run every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint fuzz bench-micro lock system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# API_KEY from the environment, or a local key generated once into .api_key (git-ignored).
run: install
	@key="$${API_KEY:-}"; \
	if [ -z "$$key" ]; then \
	  [ -s .api_key ] || $(VENV)/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))' > .api_key; \
	  key="$$(cat .api_key)"; \
	fi; \
	echo "API key: $$key   (send it as X-API-Key; README.md shows a curl example)"; \
	API_KEY="$$key" exec $(VENV)/bin/events up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Debian's chromium and prometheus (promtool), installed when missing: tools/system-packages.
system-packages:
	tools/system-packages

test: lint system-packages
	$(VENV)/bin/pytest

# The schemathesis run of tests/test_schemathesis.py (which `make test` runs at 2,000+
# cases with a fixed seed) at 10,000+ cases with a new seed; prints a FUZZ {...} line.
fuzz: install
	EVENTS_FUZZ_EXAMPLES=2500 EVENTS_FUZZ_MIN_CASES=10000 EVENTS_FUZZ_SEED=random \
	  $(VENV)/bin/pytest -s --timeout 3600 tests/test_schemathesis.py

bench-micro: install
	$(VENV)/bin/pytest bench --benchmark-only --benchmark-enable -p no:cacheprovider -o addopts=""

# requirements.lock: the exact runtime dependencies the Dockerfile installs.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet .
	{ echo "# Pinned runtime dependencies for the container image (Dockerfile). Regenerate with"; \
	  echo "# \`make lock\` after changing pyproject.toml's dependencies."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^events-ingest'; } > requirements.lock
	rm -rf .lock-venv
