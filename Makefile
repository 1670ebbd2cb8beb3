# Two commands on a fresh clone: `make demo` (the whole job on data/) and `make test`.
# Each sets itself up: a .venv with torch (the pinned CPU build unless one is importable) and nmt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= runs/demo
TORCH  ?= torch==2.13.0
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install test test-fast lint demo bench clean docs results gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# One worker per CPU this process may use (nproc), each test on one thread of its worker's own
# CPU (tests/conftest.py); JOBS=1 runs them one after another.
test: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal

# The development loop: everything but the tests that train to a quality figure or start many
# processes (marked slow); CI runs them all (make test).
test-fast: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal -m "not slow"

# Style, the import-layer contract (tests/test_layout.py: cli > bench > serve > train | translate |
# preprocess > decode | evaluate > model > config > data > base), and the size picture: the five
# largest files, classes and functions, printed so that growth is seen while it happens.
lint: install
	$(BIN)/ruff check nmt tests data recipes scripts
	$(BIN)/ruff format --check nmt tests data recipes scripts
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layout.py
	$(BIN)/python scripts/sizes.py nmt

docs: install
	$(BIN)/nmt config --reference > docs/config.md

# The main job on the shipped sample: preprocess, train a small model for a fixed number of
# updates (the same model on every machine), translate the test split with beam search, and
# score it (BLEU, chrF); then the floor an untrained system gets (the untranslated source copied).
demo: install
	@echo "== make demo: 400 updates of a 2.3M-parameter rnnsearch on 10,000 verses; about 2.5 minutes"
	@echo "   on an idle 2-core CPU (longer on a slower or busier one; a progress bar shows the ETA)"
	$(BIN)/nmt preprocess --config configs/sample.yaml --out $(DEMO)/data --overwrite
	$(BIN)/nmt train configs/sample.yaml --data $(DEMO)/data --out $(DEMO)/run --overwrite
	$(BIN)/nmt translate $(DEMO)/run/best.pt -i $(DEMO)/data/test.es.txt -o $(DEMO)/test.hyp.txt \
		--plot-attention $(DEMO)/attention --plot-lines 3
	@echo "== floor: the source copied as the 'translation'"
	$(BIN)/nmt evaluate $(DEMO)/data/test.es.txt $(DEMO)/data/test.en.txt --metrics bleu,chrf
	@echo "== the trained model, beam search on the test split ($(DEMO)/test.hyp.txt)"
	$(BIN)/nmt evaluate $(DEMO)/test.hyp.txt $(DEMO)/data/test.en.txt --metrics bleu,chrf

# docs/results.md from scratch: the reference recipe for each architecture (40 minutes of
# training each on a 2-core CPU), then the learning curves. About two and a quarter hours.
BIBLE ?= ../shared/data/bible-es-en
results: install
	for arch in rnnsearch rnnenc luong; do ARCH=$$arch recipes/bible-es-en.sh $(BIBLE) runs/bible || exit 1; done
	$(BIN)/python recipes/plot_curves.py runs/bible/rnnsearch runs/bible/rnnenc runs/bible/luong -o docs/curves.png

bench: install
	$(BIN)/nmt bench preprocess --corpus data/train.tsv --out bench-out
	$(BIN)/nmt bench batching --data $(DEMO)/data --out bench-out
	$(BIN)/nmt bench translate $(DEMO)/run/best.pt -i $(DEMO)/data/test.es.txt --lines 500 --out bench-out

# On a GPU machine (issue 34): CUDA, the device test matrix (tests/test_devices.py), the demo
# model trained there, bench train / translate / distributed on the GPU; the reports and one
# summary table (summary.md, printed last) in runs/gpu-check/. Sized for 8 minutes on one H100.
# GPU_CHECK_DEVICE=cpu: the same steps, tiny, on the CPU (about a minute). Without network (the
# lent GPU machine): python3 scripts/gpu_check.py, with .whl/ from scripts/gpu_wheels.sh.
gpu-check: install
	$(BIN)/python scripts/gpu_check.py

clean:
	rm -rf runs bench-out .pytest_cache
