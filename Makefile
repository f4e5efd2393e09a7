# The two commands: `make up` runs the system, `make test` tests it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

ROLE ?= sales
SUB ?= dev.user
UNIT ?=

.PHONY: up down test token demo install infra clean help lock bench

help:
	@echo "make up     install what is missing, start RabbitMQ, FerretDB and the five services"
	@echo "make down   stop everything make up started"
	@echo "make test   the same start, then the whole test suite (report: reports/junit.xml)"
	@echo "make token ROLE=quality SUB=li.wei [UNIT=production]   a development JWT"
	@echo "make demo   play a realistic month through the APIs (with make up running)"
	@echo "make bench  speed at 0, 10k and 100k complaints against the machine's limits, then a soak (~45 min;"
	@echo "            BENCH_SIZES=0,1000 for a quick look; report: reports/bench.md)"

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -c requirements.lock -e '.[test,reporting,notify,console]'
	@touch $(STAMP)

install: $(STAMP)
	@scripts/infra.sh install

infra: install
	@scripts/infra.sh start

up: infra
	@$(PY) scripts/run_services.py

down:
	@if [ -f var/run/services.pid ]; then kill -TERM $$(cat var/run/services.pid) 2>/dev/null || true; \
	  for i in $$(seq 1 60); do [ -f var/run/services.pid ] || break; sleep 0.5; done; \
	  rm -f var/run/services.pid; fi
	@scripts/infra.sh stop

test: infra
	@mkdir -p reports
	$(PY) -m pytest --junitxml=reports/junit.xml $(PYTEST_ARGS)

token: $(STAMP)
	@$(PY) -m shared.auth --role "$(ROLE)" --sub "$(SUB)" $(if $(UNIT),--unit "$(UNIT)")

clean:
	rm -rf var reports
demo: $(STAMP)
	@$(PY) scripts/demo.py

# Not part of `make test`: figures and targets, never a failure on a target.
bench: infra
	@mkdir -p reports
	$(PY) scripts/bench.py

# Pin what the services run on (the images install from it too); after changing the
# dependencies in pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --strip-extras --extra reporting --extra notify --extra console \
	  --no-emit-find-links --no-emit-index-url -o requirements.lock pyproject.toml
