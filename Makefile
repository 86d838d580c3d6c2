# Every operation has a target. `make demo` and `make test` set everything up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint format web worker check bench compose-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[blender,dev]'
	touch $(STAMP)

demo: setup          ## render the demo scene end to end on the embedded defaults (no servers)
	$(BIN)/farm demo

test: setup          ## lint, then the whole suite against the local Postgres, Redis, a moto S3 server, real Blender
	tools/system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

web: setup
	$(BIN)/farm web

worker: setup
	$(BIN)/farm worker

check: setup
	$(BIN)/farm check

bench: setup         ## measure against same-run baselines; tables in bench/results/ (needs Postgres + Redis)
	$(BIN)/python -m bench.render $(if $(SCENE),--scene $(SCENE))
	$(BIN)/python -m bench.orchestration
	$(BIN)/python -m bench.packaging $(if $(SIZE_MB),--size-mb $(SIZE_MB))
	$(BIN)/python -m bench.latency $(if $(SCENE),--scene $(SCENE))
	$(BIN)/python -m bench.projects $(if $(SIZE_MB),--size-mb $(SIZE_MB))
	$(BIN)/python -m bench.eta
	$(BIN)/python -m bench.split

compose-check:       ## validate compose.yaml: with your .env, or (none yet) with placeholders for .env.example's
	@if [ -f .env ]; then docker-compose -f compose.yaml config --quiet; else \
	  placeholders=$$(mktemp) && sed -E 's/^([A-Z0-9_]+)=$$/\1=placeholder-for-checking-only/' .env.example > $$placeholders && \
	  docker-compose --env-file $$placeholders -f compose.yaml config --quiet; status=$$?; rm -f $$placeholders; \
	  [ $$status -eq 0 ] && echo "compose.yaml is valid (checked with placeholders: write .env before docker compose up)"; \
	  exit $$status; fi

clean:
	rm -rf $(VENV) instance demo-output .pytest_cache .ruff_cache
