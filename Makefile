# The two commands of the README: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data/marketplace
REPORT_DIR ?= reports/marketplace

.PHONY: run test lint data evaluate clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Main job on the embedded default marketplace; reruns reuse what is already built.
run: evaluate

data: $(STAMP)
	@if [ -f $(DATA_DIR)/items.csv ]; then echo "reusing $(DATA_DIR)"; \
	else $(BIN)/curator data generate --out $(DATA_DIR); fi

evaluate: data
	$(BIN)/curator evaluate --data $(DATA_DIR) --out $(REPORT_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data runs exports reports
