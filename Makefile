# pgolf: two commands on a fresh machine -- `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# A budget that bites for the tiny demo model (about 65% of its int8 size + the 47,642 code bytes).
DEMO_BUDGET = 420KB
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

# torch first and pinned (a CPU wheel here); an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/pgolf data prepare
	$(BIN)/pgolf train run.name=demo
	$(BIN)/pgolf fit-budget runs/latest --max-bytes $(DEMO_BUDGET)

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_demo.py

lint: setup
	$(BIN)/ruff check pgolf tests bench

clean:
	rm -rf $(VENV) runs/20* runs/latest runs/sweeps
