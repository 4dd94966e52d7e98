# The two commands of the README: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data/marketplace
REPORT_DIR ?= reports/marketplace
RUNS_DIR ?= runs
EXPORT_DIR ?= exports

.PHONY: run test lint data train evaluate export demo serve clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Main job on the embedded default marketplace: train Curator and the paper's configuration,
# evaluate both beside the baselines, export Curator, then start the service, show example
# requests and keep serving until Ctrl-C (`make run DEMO_EXIT=1` stops after the examples).
# Reruns reuse what is already built; an interrupted training run resumes from its checkpoint.
run: demo

data: $(STAMP)
	@if [ -f $(DATA_DIR)/items.csv ]; then echo "reusing $(DATA_DIR)"; \
	else $(BIN)/curator data generate --out $(DATA_DIR); fi

# curator: the configuration search (`--trials`, see docs/training.md); the paper's config as given
CURATOR_TRIALS ?= 4
train: data
	@for config in curator curatornet-paper; do \
	  run=$(RUNS_DIR)/$$config; \
	  if [ $$config = curator ]; then trials=$(CURATOR_TRIALS); else trials=1; fi; \
	  if [ -f $$run/summary.json ] && { [ $$trials = 1 ] || [ -f $$run/search.json ]; }; then \
	    echo "reusing $$run"; \
	  elif [ -d $$run ]; then \
	    $(BIN)/curator train --data $(DATA_DIR) --config $$config --trials $$trials --out $$run --resume || exit 1; \
	  else $(BIN)/curator train --data $(DATA_DIR) --config $$config --trials $$trials --out $$run || exit 1; fi; \
	done

evaluate: train
	$(BIN)/curator evaluate --data $(DATA_DIR) --out $(REPORT_DIR) --force \
	  --model $(RUNS_DIR)/curator --model $(RUNS_DIR)/curatornet-paper

export: evaluate
	@if ls $(EXPORT_DIR)/*/manifest.json >/dev/null 2>&1; then echo "reusing $(EXPORT_DIR)"; \
	else $(BIN)/curator export --run $(RUNS_DIR)/curator --out $(EXPORT_DIR); fi

demo: export
	$(BIN)/curator demo --model $(EXPORT_DIR) $(if $(DEMO_EXIT),--no-keep-serving,)

# The recommendation service on the newest export (http://127.0.0.1:8000/docs).
serve: export
	$(BIN)/curator serve --model $(EXPORT_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data runs exports reports
