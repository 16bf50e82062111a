# The two newcomer commands: `make run` (set up + the default job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# No telemetry or analytics from any tool, here or in CI.
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export KEDRO_LOGGING_CONFIG := $(CURDIR)/conf/logging.yml

.PHONY: setup run test test-all repro benchmark ssl-benchmark review clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/kedro run

test: setup
	$(BIN)/python -m pytest

# The slow and real-data tests that CI skips.
test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

# The DVC stages (dvc.yaml) with the venv's kedro on PATH.
repro: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

benchmark: setup
	$(BIN)/python benchmarks/ingestion.py
	$(BIN)/python benchmarks/training_speed.py
	$(BIN)/python benchmarks/synthetic_methods.py

# Every SSL method on the real data through the real pipelines, cached per run (hours at the CPU budget):
# make ssl-benchmark ARGS="--dataset psfhs --ratios 0.05 --methods supervised,hdc --seeds 0,1,2"
ssl-benchmark: setup
	$(BIN)/python benchmarks/ssl_benchmark.py $(ARGS)

# The MLflow UI on the project's store, local only: Models → sonoseg → compare versions (README).
review: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean-data:
	find data -mindepth 2 ! -name .gitkeep -delete
