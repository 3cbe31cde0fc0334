# Two commands on a fresh machine (README quick start):
#   make smoke   install, then run the smoke study end to end on the local executor
#   make test    install, then lint, type-check and run the tests
VENV ?= .venv
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: install smoke test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints-cpu.txt -e ".[all,dev]"
	touch $@

smoke: install
	$(VENV)/bin/webssl study run studies/smoke.yaml --wait

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q
