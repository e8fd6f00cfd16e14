# bighub-siem — the two set-up commands are `make run` and `make test`.
# Everything below installs what it needs into ./.venv from the package registries.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

# Development-only values: `make run` prints them so send-test can use them.
DEV_SECRET ?= dev-webhook-secret-change-me-0123
DEV_ADMIN_TOKEN ?= dev-admin-token-change-me-0123
DEV_CONFIG ?= deploy/examples/dev.toml
# The venv `make run` builds has every optional sink and the PostgreSQL store, so each
# config in deploy/examples/ passes check-config in it.
EXTRAS ?= kafka,s3,postgres,securitylake,sentinel

.PHONY: run test test-container docs lint bench install install-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	@echo "bighub-siem dev receiver: http://127.0.0.1:8080/webhooks/bighub (admin/metrics on 127.0.0.1:9464)"
	@echo "spool: deploy/examples/var/spool.db (relative paths are relative to $(DEV_CONFIG))"
	@echo "dev webhook secret: $(DEV_SECRET)"
	@echo "dev admin token:    $(DEV_ADMIN_TOKEN)"
	@echo "try: BIGHUB_WEBHOOK_SECRET=$(DEV_SECRET) $(VENV)/bin/bighub-siem send-test --secret env:BIGHUB_WEBHOOK_SECRET"
	BIGHUB_WEBHOOK_SECRET='$(DEV_SECRET)' BIGHUB_SIEM_ADMIN_TOKEN='$(DEV_ADMIN_TOKEN)' \
		$(VENV)/bin/bighub-siem serve --config $(DEV_CONFIG)

# The configuration reference in docs/configuration.md is written from the settings models.
docs: $(VENV)/.installed
	$(VENV)/bin/bighub-siem config-reference --update docs/configuration.md

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Tests start their own services (tansu, moto, the HEC emulator, the fake BIGHUB API);
# PostgreSQL is expected at 127.0.0.1:5432 (tests/services/postgres.sh starts or installs it).
test: $(VENV)/.installed-test
	bash tests/services/postgres.sh
	bash tests/services/debian-tools.sh promtool:prometheus docker-compose:docker-compose
	$(MAKE) lint
	$(VENV)/bin/pytest
	$(MAKE) test-container

# Builds deploy/Dockerfile with podman and runs it: send-test, stop, non-root (README,
# "Container"). Installs podman, buildah, mmdebstrap and runc from Debian when missing.
test-container: $(VENV)/.installed-test
	bash tests/services/debian-tools.sh podman:podman buildah:buildah mmdebstrap:mmdebstrap runc:runc
	$(VENV)/bin/pytest tests/container

bench: $(VENV)/.installed-test
	bash tests/bench/run.sh

clean:
	rm -rf $(VENV) var deploy/examples/var build .mypy_cache .ruff_cache .pytest_cache .hypothesis
