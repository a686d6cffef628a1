# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps test lint unit integration demo protos clean

$(STAMP): pyproject.toml tests/idp/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser test (never a downloaded browser build).
system-deps:
	@bash scripts/install-system-deps.sh

lint: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/mypy src scripts

unit: install
	$(PY) -m pytest tests/unit -q

integration: install system-deps
	$(PY) -m pytest tests/integration -q

# Everything: install, lint, type-check, every test.
test: install system-deps lint
	$(PY) -m pytest -q

demo: install
	$(PY) demo/run.py

protos: install
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) tests/idp/node_modules .demo

# Load benchmark (bench/README.md): wrk, nginx and strace from Debian; ~10 minutes.
.PHONY: bench
bench: install
	bash bench/install-deps.sh
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris) of the targets the CI fuzz tests check briefly:
# `make fuzz FUZZ_SECONDS=600` runs each target that long; crashes land in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: install
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)
