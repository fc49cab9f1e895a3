# The two set-up commands: `make demo` and `make test`. Each creates .venv and
# installs what it needs on a fresh machine; a second run installs nothing
# (the stamp file is newer than pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is not pinned in pyproject.toml (GPU users need CUDA builds). Without a
# GPU we install this version, which comes from the local wheel cache where one
# exists; set TORCH_INDEX_URL to PyTorch's CPU wheel index for the small CPU build.
TORCH_CPU_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# make test runs the suite in this many processes (pytest-xdist, a test file per process at a time, so module
# fixtures are built once); TEST_WORKERS=0 runs it in one process. Each process gets cores/TEST_WORKERS threads.
TEST_WORKERS ?= 2

.PHONY: setup demo test check doctor clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU found: installing a CUDA build of torch"; \
	  $(BIN)/pip install -q "torch>=2.6"; \
	else \
	  echo "no GPU: installing torch==$(TORCH_CPU_VERSION) (CPU)"; \
	  $(BIN)/pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "torch==$(TORCH_CPU_VERSION)"; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job: curate, train (NF4 QLoRA on CPU), evaluate, gate, report. The gate's
# verdict (exit 0 pass, 1 fail, 2 inconclusive) is printed, not treated as a make
# error; exit 3 (an error) fails the target.
demo: setup
	@$(BIN)/laf run examples/quickstart.yaml; code=$$?; \
	if [ $$code -ge 3 ]; then exit $$code; fi; \
	echo "demo finished: gate exit code $$code (0 pass, 1 fail, 2 inconclusive); open reports/quickstart/report.html"

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Lint (ruff: pyflakes, import order, bugbear), types (mypy on the modules listed in pyproject.toml) and the
# manual (docs/, mkdocs.yml): a strict build, so a broken link, a missing anchor or a page left out of the nav fails.
# The built site goes to site/ (ignored by git). NO_MKDOCS_2_WARNING silences a banner about future versions.
check: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

doctor: setup
	$(BIN)/laf doctor

clean-venv:
	rm -rf $(VENV)
