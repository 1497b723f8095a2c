# The two commands of the README: `make demo` and `make test`.
# Each creates the virtual environment and installs the pinned dependencies when missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt torchattacks  # the experiments extra; see pyproject
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/netdissect demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dissect.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
