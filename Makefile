# pgolf: two commands on a fresh machine -- `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# A budget that bites for the tiny demo model (about 65% of its int8 size + the 47,642 code bytes).
DEMO_BUDGET = 420KB
# A small sweep that ends the demo: 2 decays x 2 prune fractions of a short training (2 trainings, 4 rows).
DEMO_SWEEP = reg.weight_decay=0,0.04 export.prune=0,0.05 train.iterations=100 train.val_every=0
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast bench lint clean

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
	$(BIN)/pgolf pack runs/latest --out runs/records/demo --force
	$(BIN)/pgolf sweep $(DEMO_SWEEP) --name demo

# Tests run on every core (pytest-xdist), one torch thread each, whole files to one worker (their module-scoped
# runs are made once); the session-scoped ones are made once per worker.
PYTEST = OMP_NUM_THREADS=1 $(BIN)/pytest -q -n auto --dist loadfile

# Every test, the slow ones too (end to end through the CLI: trainings, sweeps, torchrun, a fresh venv); CI runs this.
test: setup
	$(PYTEST)

# The unit tests only: no test marked slow (those that train or start processes); the edit-test loop.
test-fast: setup
	$(PYTEST) -m "not slow"

bench: setup
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_demo.py
	$(BIN)/python bench/bench_sweep.py

lint: setup
	$(BIN)/ruff check pgolf tests bench

clean:
	rm -rf $(VENV) runs/20* runs/latest runs/sweeps
