# DistCluster developer commands. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ROLE ?= lock_manager
NODES ?= 3
BASE_PORT ?= 8001
SIM_SEEDS ?= 2000
# make e2e: empty means Dockerfile.node's default base and redis:7-bookworm.
BASE_IMAGE ?=
REDIS_IMAGE ?=
PYTEST_ARGS ?=

.PHONY: install run test unit lint bench e2e e2e-kind base-image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,operator]'
	touch $@

install: $(VENV)/.installed ## Create .venv with the project (editable) and its test tools.

run: install ## Start Redis and a local cluster: make run ROLE=lock_manager NODES=3
	$(BIN)/distcluster up --role $(ROLE) --nodes $(NODES) --base-port $(BASE_PORT)

lint: install ## ruff, mypy and the import-linter contracts.
	$(BIN)/ruff check worker operator tests bench
	$(BIN)/ruff format --check worker operator tests bench
	$(BIN)/mypy -p distcluster_worker -p distcluster_operator
	$(BIN)/lint-imports

test: lint ## Lint, then every test suite (unit, simulation, integration).
	SIM_SEEDS=$(SIM_SEEDS) $(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install ## Only the fast suites.
	SIM_SEEDS=$(SIM_SEEDS) $(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

BENCH ?= lock queue cache

bench: install ## Benchmarks, one JSON document each on stdout; not a test. make bench BENCH=lock
	@for name in $(BENCH); do $(BIN)/python -m bench.$${name}_bench || exit 1; done

e2e: install ## Build the node and operator images, run the docker compose scenarios (needs a Docker engine).
	BASE_IMAGE=$(BASE_IMAGE) REDIS_IMAGE=$(REDIS_IMAGE) docker/e2e.sh

e2e-kind: ## The operator on a throwaway kind cluster (needs docker, kind, kubectl, helm).
	BASE_IMAGE=$(BASE_IMAGE) scripts/e2e-kind.sh

base-image: ## Build the local base image distcluster-base:bookworm (root, debootstrap, no registry).
	docker/build-base-image.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
