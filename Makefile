# Two commands on a fresh clone: `make demo` (the whole job on data/) and `make test`.
# Each sets itself up: a .venv with torch (the pinned CPU build unless one is importable) and nmt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo
TORCH  ?= torch==2.13.0

.PHONY: install test lint demo bench clean docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check nmt tests data
	$(BIN)/ruff format --check nmt tests data

docs: install
	$(BIN)/nmt config --reference > docs/config.md

# The main job on the shipped sample. For now: preprocess, then score the untranslated source
# against the reference (a floor any model must beat); training and translation come next.
demo: install
	$(BIN)/nmt preprocess --config configs/sample.yaml --out $(DEMO)/data --overwrite
	@echo "== baseline: source copied as the 'translation' (what an untrained system scores)"
	$(BIN)/nmt evaluate $(DEMO)/data/test.es.txt $(DEMO)/data/test.en.txt --metrics bleu,chrf,ter

bench: install
	$(BIN)/nmt bench preprocess --corpus data/train.tsv --out bench-out
	$(BIN)/nmt bench batching --data $(DEMO)/data --out bench-out

clean:
	rm -rf runs bench-out .pytest_cache
