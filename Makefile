# The two commands of the README: `make demo` and `make test`. Both install first.
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/demo

.PHONY: install install-label-studio demo test test-quick lint bench evidence clean

install:
	@bash scripts/install.sh

# Label Studio in its own venv (.venv-label-studio), for the annotation round-trip test.
install-label-studio:
	@bash scripts/install_label_studio.sh

demo: install
	$(BIN)/grpo demo --workdir $(WORKDIR)

lint: install
	$(BIN)/ruff check .

test: install install-label-studio lint
	$(BIN)/pytest --durations=30

# While working: everything but the tests that start vLLM or a subprocess pipeline.
test-quick: install
	$(BIN)/pytest -m "not slow"

# Every benchmark, with the settings of the README's tables (each ~10-30 min on 2 cores).
bench:
	@EXTRAS=bench bash scripts/install.sh
	$(BIN)/python -m bench.generation --sweep
	$(BIN)/python -m bench.consensus
	$(BIN)/python -m bench.trainer --repeats 3
	$(BIN)/python -m bench.judging
	$(BIN)/python -m bench.seed_table
	$(BIN)/python -m bench.loop_engine
	$(BIN)/python -m bench.demo_judge
	$(BIN)/python -m bench.judge_start

# The seed's claims with 95% intervals (bench/evidence.py): up to an hour on 2 cores; every
# stage is kept in runs/evidence, so running it again resumes where it stopped.
evidence: install
	$(BIN)/python -m bench.evidence --out runs/evidence

clean:
	rm -rf runs .pytest_cache
