# lra_bench: `make help` lists the targets. Everything that needs Python depends on the venv,
# so `make lra-task` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON     ?= python3
VENV       ?= .venv
# CPU build that lies on this machine's disk; any other spec (e.g. a CUDA build) works on other machines.
TORCH_SPEC ?= torch==2.13.0
DATA_DIR   ?= $(if $(LRA_DATA_DIR),$(LRA_DATA_DIR),data)
TASK       ?=
MODEL      ?=
ARGS       ?=
WORKERS    ?= $(shell nproc 2>/dev/null || echo 2)

TASKS  := listops text retrieval image pathfinder pathx
# every built-in model (conf/model/*.yaml); a model of your own package is found through LRA_BENCH_CONFIG_PATH
MODELS := $(sort $(basename $(notdir $(wildcard conf/model/*.yaml))))
DEFAULT_MODEL := mega

BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.install-stamp
DATA  := $(abspath $(DATA_DIR))

.PHONY: help install test test-slow test-cuda test-all browser lra-task sweep report dashboard data data-quick data-quick-pathfinder data-listops bench bench-attention bench-ssm bench-data bench-pathfinder bench-mega bench-s4 check-model gpu-check clean clean-cache distclean

help: ## list the targets
	@echo "lra_bench: make <target> [TASK=<task>] [MODEL=<model>] [ARGS=\"hydra overrides\"]"
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo "  tasks: $(TASKS)   models: $(MODELS)   data root: $(DATA)   torch: $(TORCH_SPEC)"

# The stamp records TORCH_SPEC: changing it (or pyproject.toml) reinstalls.
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(TORCH_SPEC))
.PHONY: $(STAMP)
endif
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]" -e examples/lra_example
	@echo "$(TORCH_SPEC)" > $(STAMP)

install: $(STAMP) ## create .venv and install torch (TORCH_SPEC), then lra_bench editable with dev extras

# test processes (pytest-xdist; a file's tests stay in one process, so its fixtures are built once)
TEST_WORKERS ?= 2
test: install ## fast CPU test suite (what CI runs first); TEST_WORKERS=2 processes
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: install ## slow checks only (CI runs them too)
	$(PY) -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile || [ $$? -eq 5 ]

test-cuda: install ## CUDA-only paths (optional kernels, e.g. mamba_ssm's selective scan) on a GPU machine
	$(PY) -m pytest -q -m cuda

test-all: test test-slow ## both suites

BROWSERS := chromium chromium-browser google-chrome
browser: ## Chromium for the report's browser test (tests/test_report_browser.py): apt-get installs it when none is on PATH
	@for b in $(BROWSERS); do command -v $$b >/dev/null && { echo "browser: $$(command -v $$b)"; exit 0; }; done; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium && command -v chromium

lra-task: install ## train: no TASK = quick CPU default (MODEL=... picks its model); TASK=... = experiment=lra/MODEL-TASK
	@m="$(or $(MODEL),$(DEFAULT_MODEL))"; \
	case " $(MODELS) " in *" $$m "*) ;; *) test -n "$$LRA_BENCH_CONFIG_PATH" || \
	  { echo "error: unknown MODEL=$$m; valid models: $(MODELS) (your own: set LRA_BENCH_CONFIG_PATH, see README)"; exit 2; };; esac
ifeq ($(TASK),)
	@$(MAKE) --no-print-directory data-quick
	$(PY) -m lra_bench.train experiment=quick model=$(or $(MODEL),$(DEFAULT_MODEL)) paths.data_dir=$(DATA) $(ARGS)
else
	@case " $(TASKS) " in *" $(TASK) "*) ;; *) echo "error: unknown TASK=$(TASK); valid tasks: $(TASKS)"; exit 2;; esac
	@if [ "$(TASK)" = listops ]; then $(MAKE) --no-print-directory data-listops; fi
	@if [ "$(TASK)" = pathfinder ] && ! ls $(DATA)/pathfinder32/curv_contour_length_14/metadata/*.npy >/dev/null 2>&1 && \
	    ! ls $(DATA)/*/*/pathfinder32 >/dev/null 2>&1; then $(MAKE) --no-print-directory data TASK=pathfinder; fi
	$(PY) -m lra_bench.train experiment=lra/$(or $(MODEL),$(DEFAULT_MODEL))-$(TASK) paths.data_dir=$(DATA) $(ARGS)
endif

PF_IMAGES ?= 200000
data: install ## data for TASK (generate listops/pathfinder/pathx, download text/image/retrieval); no TASK = both ListOps sets
ifeq ($(TASK),)
	@$(MAKE) --no-print-directory data-quick data-listops
else ifeq ($(TASK),listops)
	@$(MAKE) --no-print-directory data-listops
else ifeq ($(TASK),pathfinder)
	$(PY) -m data_prep.pathfinder --out-dir $(DATA) --resolution 32 --difficulty curv_contour_length_14 --num-images $(PF_IMAGES) --workers $(WORKERS)
else ifeq ($(TASK),pathx)
	$(PY) -m data_prep.pathfinder --out-dir $(DATA) --resolution 128 --difficulty curv_contour_length_14 --num-images $(PF_IMAGES) --workers $(WORKERS)
else
	$(PY) -m data_prep.fetch --task $(TASK) --data-dir $(DATA)
endif

SWEEP ?= smoke
sweep: install ## Hydra multirun preset SWEEP (smoke | seeds | lra-table | spt-quick-listops | spt-quick-pathfinder), one W&B run per job; rerun skips finished cells
	@case "$(SWEEP)" in smoke|spt-quick-*) $(MAKE) --no-print-directory data-quick data-quick-pathfinder;; esac
	$(PY) -m lra_bench.train +sweep=$(SWEEP) paths.data_dir=$(DATA) $(ARGS)

report: install ## the LRA table, efficiency table, plots, markdown and HTML from logs/ (and W&B when online) into reports/
	$(PY) -m lra_bench.report --out reports/lra $(ARGS)

dashboard: install ## W&B Report comparing models (wandb-workspaces): ARGS="--entity E --project P [--group G]"; --dry-run writes its spec offline
	$(PY) -m lra_bench.dashboard $(ARGS)

data-quick-pathfinder: install ## 2,000 easy pathfinder32 images for quick runs and the smoke sweep
	@test -f $(DATA)/pathfinder32/curv_baseline/metadata/1.npy || $(PY) -m data_prep.pathfinder --out-dir $(DATA) \
		--resolution 32 --difficulty curv_baseline --num-images 2000 --images-per-batch 1000 --seed 0 --quiet

data-quick: install ## the short ListOps variant of the quick default (data/listops-quick)
	@test -f $(DATA)/listops-quick/basic_test.tsv || $(PY) -m data_prep.listops --out-dir $(DATA)/listops-quick \
		--train 20000 --val 1000 --test 1000 --min-length 20 --max-length 120 --max-depth 5 --max-args 5 --seed 0

data-listops: install ## full LRA ListOps, 96K/2K/2K (data/listops-1000), about 30 s on 2 cores
	@test -f $(DATA)/listops-1000/basic_test.tsv || $(PY) -m data_prep.listops --out-dir $(DATA)/listops-1000 --seed 0

bench: install ## efficiency benchmark: every model x 1K..16K, speed/memory/FLOPs, ratios vs both Transformers (bench_results/)
	$(PY) -m lra_bench.bench $(ARGS)

bench-attention: install ## each attention mechanism vs its reference package (local-attention, linformer, performer-pytorch, sinkhorn-transformer, HF Longformer/Reformer/BigBird) at 1K/2K/4K (bench_results/attention)
	$(PY) -m lra_bench.benchmarks.attention --out bench_results/attention $(ARGS)

bench-ssm: install ## S5 vs s5-pytorch, Mamba vs mambapy, S5/LRU vs our S4D at 1K/2K/4K (bench_results/ssm)
	$(PY) -m lra_bench.benchmarks.ssm --out bench_results/ssm $(ARGS)

bench-data: install ## benchmark the ListOps generator (full split, 3 repeats, 2 workers): time and peak memory
	$(PY) -m data_prep.bench_listops --repeats 3 --workers 2

bench-pathfinder: install ## Pathfinder generator speed on a sample (32px and 128px), projected to 200K images
	$(PY) -m data_prep.bench_pathfinder --resolution 32 --num-images 400 --workers 2
	$(PY) -m data_prep.bench_pathfinder --resolution 128 --num-images 80 --workers 2 --repeats 2

bench-s4: install ## S4 and S4D step speed and memory at 1K/4K/16K against the public S4 block (bench_results/s4)
	$(PY) -m lra_bench.benchmarks.s4 --out bench_results/s4 $(ARGS)

bench-mega: install ## Mega vs the Hugging Face port: tokens/s and peak memory at 1K/4K/16K (bench_results/mega)
	$(PY) -m lra_bench.benchmarks.mega --out bench_results/mega $(ARGS)

check-model: install ## backbone protocol checks of MODEL (pads, batch rows, gradients, bf16, cost, budget, training); TASK=..., ARGS="quick=true --long"
	$(PY) -m lra_bench.check_model model=$(MODEL) $(if $(TASK),task=$(TASK)) $(ARGS)

gpu-check: install ## acceptance run for a GPU node (~5 min): every model fwd/bwd fp32+bf16, training, kernels, DDP, bench; ARGS="--device cpu --quick"
	$(PY) -m lra_bench.gpu_check $(ARGS)

clean: ## remove run outputs and Python caches (keeps data and .venv)
	rm -rf logs outputs multirun lightning_logs wandb .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

clean-cache: ## remove the preprocessed data cache (rebuilt on the next run)
	rm -rf $(DATA)/cache

distclean: clean ## also remove .venv and generated data
	rm -rf $(VENV) $(DATA)
