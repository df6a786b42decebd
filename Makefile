# fld-engine. Every target sets up what it needs: the first one creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test reliability bench bench-refine lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision pinned: these lie on this machine's disk (a CUDA build that runs on CPU).
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	rm -rf demo/corpus
	$(BIN)/fld run demo/images --out demo/corpus --shard-size 4 --workers 2
	$(BIN)/fld stats demo/corpus
	mkdir -p demo/show
	$(BIN)/fld show demo/corpus bus.jpg --out demo/show/bus.png
	$(BIN)/fld show demo/corpus sign.png --out demo/show/sign.png
	$(BIN)/fld show demo/corpus bus.jpg --phrases --out demo/show/bus_phrases.png
	$(BIN)/fld report demo/corpus --out demo/show/report.html

test: install
	$(BIN)/pytest -q

reliability: install
	$(BIN)/pytest -q -m slow tests/reliability

bench: install
	$(BIN)/python bench/run.py

bench-refine: install  # about 25 minutes on 2 CPU cores
	$(BIN)/python bench/refine_gain.py --scenes 150 --epochs 15

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf demo/corpus demo/show .pytest_cache
