# Two commands matter on a fresh Debian machine (as root): `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
LOCAL_DIR ?= .local/cluster
APT_PACKAGES := etcd-server mariadb-server mariadb-client iproute2 iptables chromium chromium-driver

.PHONY: setup run stop status test lint format clean

# Installs what is missing: Debian's etcd and MariaDB servers, a venv with the project.
setup: $(VENV)/.installed
	@{ command -v etcd && { command -v mariadbd || test -x /usr/sbin/mariadbd; } \
	   && command -v ip && { command -v iptables || test -x /usr/sbin/iptables; } \
	   && command -v chromium && command -v chromedriver; } >/dev/null || { \
	  echo "installing $(APT_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; }

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Starts etcd, 3 MariaDB servers, a migration target and the service on loopback, then a demo
# reparent and a demo migration task (its query-status is printed).
run: setup
	@$(VENV)/bin/orchestrator local up --dir $(LOCAL_DIR) --target --demo

stop:
	@test -x $(VENV)/bin/orchestrator && $(VENV)/bin/orchestrator local down --dir $(LOCAL_DIR) || true

status:
	@$(VENV)/bin/orchestrator local status --dir $(LOCAL_DIR)

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: stop
	rm -rf $(VENV) .local .pytest_cache
