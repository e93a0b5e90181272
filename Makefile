# segflow: `make run` sets everything up and runs the whole pipeline; `make test` runs the tests.
# Both are idempotent: a second `make run` reuses the venv, the data and DVC's cache.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# The venv's tools first on PATH (dvc.yaml's `bin/segflow stage ...` finds the venv without it).
export PATH := $(BIN):$(PATH)
# Everything else segflow sets (analytics off, PREFECT_HOME and WANDB_* dirs inside the project,
# W&B offline unless configured) lives in src/segflow/env.py; `make env` prints it.

.PHONY: setup data run repro test test-fast lint plots env clean help deploy pools
help:
	@echo "make run    set up, fetch data, run the whole pipeline (dvc repro)"
	@echo "make test   set up, lint, run the tests"
	@echo "make lint   ruff over src, tests, flows, bench (pyproject.toml [tool.ruff])"
	@echo "make plots  render DVC plots to artifacts/plots (offline HTML + PNG)"
	@echo "make env    print the environment segflow sets"
	@echo "make pools  create the Prefect work pools for one machine (PREFECT_API_URL set)"
	@echo "make deploy register prefect.yaml's deployments and schedules (PREFECT_API_URL set)"

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# torch first: this exact pin takes the local CPU wheel (or CUDA on a GPU machine); any other
	# spec, or installing monai first, pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) git-identity

# DVC needs a git identity; set a repo-local one only where none is configured.
.PHONY: git-identity
git-identity:
	@git config user.email >/dev/null || git config user.email "segflow@localhost"
	@git config user.name >/dev/null || git config user.name "segflow"

data: setup
	$(BIN)/segflow fetch-data

run: data
	SEGFLOW_RUN_GROUP=$${SEGFLOW_RUN_GROUP:-run-$$(date +%Y%m%d-%H%M%S)} $(BIN)/dvc repro
	$(BIN)/dvc push --quiet || echo "dvc push failed (remote unreachable?); results are local"
	@$(BIN)/segflow report

repro: setup
	$(BIN)/dvc repro

# Tests run in TEST_WORKERS processes (pytest-xdist), a module's tests in one process so its
# module fixtures (a Prefect server, a trained project) are built once; 1 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope)

test: lint
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow and not integration"

lint: setup
	$(BIN)/ruff check src tests flows bench

plots: setup
	$(BIN)/segflow plots

env: setup
	@$(BIN)/segflow env

# One machine: both pools are process pools (a cluster creates segflow-gpu from
# infra/prefect/kubernetes-gpu-pool.json instead; see README "Run on a cluster").
pools: setup
	$(BIN)/prefect work-pool create segflow-cpu --type process --overwrite \
	  --base-job-template infra/prefect/process-pool.json
	$(BIN)/prefect work-pool create segflow-gpu --type process --overwrite \
	  --base-job-template infra/prefect/process-pool.json

# Workers clone SEGFLOW_GIT_URL at SEGFLOW_GIT_BRANCH (prefect.yaml); default: this checkout.
deploy: setup
	SEGFLOW_GIT_URL=$${SEGFLOW_GIT_URL:-$$(git remote get-url origin 2>/dev/null || pwd)} \
	SEGFLOW_GIT_BRANCH=$${SEGFLOW_GIT_BRANCH:-$$(git rev-parse --abbrev-ref HEAD)} \
	$(BIN)/prefect --no-prompt deploy --all

clean:
	rm -rf artifacts .segflow
