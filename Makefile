# make run: the API on 127.0.0.1:$PORT with a local Firestore emulator.
# make test: lint, types and the whole test suite against an emulator of its own (what CI runs).
# make check: the fast loop, within 150 s on 2 CPUs: lint, types, the tests that need no emulator, the store contract.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
export PORT

.PHONY: run test check lint install clean fuzz soak openapi docs bench lock

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@if ! test -x $(PY); then \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
			|| { echo "make: Python 3.11 or later is needed; $(PYTHON) is not (set PYTHON=python3.12)" >&2; exit 1; }; \
		echo "Creating $(VENV) with $$($(PYTHON) --version) ..."; \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "Installing the pinned requirements into $(VENV) (requirements-dev.txt; the first time takes a minute or two) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@
	@echo "Installed."

install: $(VENV)/.installed

run: $(VENV)/.installed
	@$(PY) -m devtools run

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m devtools test -- $(PY) -m pytest -rs $(PYTEST_ARGS)

# The selection is tests/fast_loop.py's: deselected, never skipped; the store contract starts its own emulator.
check: lint
	$(PY) -m pytest -p tests.fast_loop -q $(PYTEST_ARGS)

fuzz: $(VENV)/.installed
	$(PY) scripts/fuzz.py $(FUZZ_ARGS)

# make soak FAULTS=0.05: the same load through the fault proxy (that share of Firestore calls cut), then the audit.
soak: $(VENV)/.installed
	$(PY) scripts/soak.py $(if $(FAULTS),--faults $(FAULTS)) $(SOAK_ARGS)

openapi: $(VENV)/.installed
	$(PY) scripts/openapi.py

# docs/configuration.md from the settings object (session/config.py); tests/test_docs.py fails when it drifts.
docs: $(VENV)/.installed
	$(PY) scripts/docs.py

# requirements.txt (what Cloud Functions installs) from the direct pins in requirements.in, transitive ones included.
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --custom-compile-command "make lock" \
		requirements.in -o requirements.txt

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	@$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	@touch $@

# Installs wrk with apt-get when it can; stops at once with one line naming anything else that is missing.
bench: $(VENV)/.bench-installed
	@$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .logs
