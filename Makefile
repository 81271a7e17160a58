# GPT-2 training for optimizer and pruning research, configured like a kernel.
#
#   make                       train what .config describes (CPU default if none)
#   make test                  the test suite
#   make defconfig-<name>      load defconfigs/<name> strictly (make list-defconfigs)
#   make menuconfig            change anything, then make
#   make help                  everything else

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: without TORCH, a new environment gets the CPU build on a machine without an NVIDIA GPU and
# PyPI's CUDA build on one with (scripts/install_torch.py says which); TORCH=<requirement> installs
# exactly that, on every call, e.g. TORCH=torch==2.13.0 (CI's CPU build).
TORCH ?=
DEFAULT_DEFCONFIG := gpt2-tiny-cpu
KCONFIG_FILES := Kconfig $(wildcard gpt2/Kconfig.* lib/Kconfig.* lib/*/Kconfig)
DEFCONFIGS := $(filter-out %.sweep.toml,$(notdir $(wildcard defconfigs/*)))
# A local copy of Tiny Shakespeare for offline use (else it is downloaded).
SHAKESPEARE_SOURCE ?=
LINUXDOC_SOURCE ?=
# A local copy of Debian's fortunes (the .deb or its folder) for the classifier's offline corpus.
FORTUNES_SOURCE ?=
# Extra flags for gpt2/train.py, e.g. TRAIN_ARGS="--max-iters 100"; RESUME=1 continues the latest run of
# this configuration, RESUME=<run folder> that run (with its own settings; TRAIN_ARGS may change those a
# resume may change, such as --max-iters).
TRAIN_ARGS ?=
RESUME ?=
# Test matrix: DRY_RUN=1 prints the plan, RERUN_FAILED=1 reruns failed runs, RESULTS=dir picks the folder,
# SLURM=1 submits it as a Slurm job array (TEST_MATRIX_SLURM_ARGS in menuconfig adds sbatch options),
# STOP_AFTER=seconds starts no run that would end later (a chunk of a study; run again for the rest).
DRY_RUN ?=
STOP_AFTER ?=
SLURM ?=
RERUN_FAILED ?=
RESULTS ?=
PYTEST_ARGS ?=
# Optional dependency groups from pyproject.toml, e.g. EXTRAS=dev,tracking for the trackers, data for
# streamed corpora (FineWeb-Edu ...) and .jsonl/.parquet custom corpora.
EXTRAS ?= dev
STAMP := $(VENV)/.installed

export KCONFIG_CONFIG := .config

.DEFAULT_GOAL := all
.PHONY: all train bench classify test-matrix test-matrix-dry-run sweep test-matrix-report results data test test-gpu golden test-slurm lint menuconfig savedefconfig olddefconfig listnewconfig \
	list-defconfigs migrate-defconfig help clean distclean venv $(addprefix defconfig-,$(DEFCONFIGS))

all: train

# --- environment ----------------------------------------------------------------------------

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "Creating $(VENV) (once)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) scripts/install_torch.py $(if $(TORCH),--spec "$(TORCH)")
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

ifneq ($(strip $(TORCH)),)
# TORCH= is honoured whenever it is given, not only when the environment is made: the recipe above
# runs again (pip changes nothing when the requirement is already met).
$(STAMP): torch-requirement
torch-requirement: ;
.PHONY: torch-requirement
endif

# --- configuration --------------------------------------------------------------------------

.config: | $(STAMP)
	@echo "No .config yet: loading the CPU default, defconfigs/$(DEFAULT_DEFCONFIG)."
	@echo "(make list-defconfigs shows the others; make menuconfig changes anything.)"
	$(PY) -m scripts.kconfig defconfig $(DEFAULT_DEFCONFIG)

config.py: .config $(KCONFIG_FILES) | $(STAMP)
	$(PY) -m scripts.kconfig genconfig

$(addprefix defconfig-,$(DEFCONFIGS)): defconfig-%: | $(STAMP)
	$(PY) -m scripts.kconfig defconfig defconfigs/$*

menuconfig: | $(STAMP)
	$(VENV)/bin/menuconfig Kconfig
	$(PY) -m scripts.kconfig genconfig

# Writes a minimal defconfig (only what differs from the defaults): DEFCONFIG=defconfigs/<new-name>.
DEFCONFIG ?= defconfig
savedefconfig: .config | $(STAMP)
	$(VENV)/bin/savedefconfig --kconfig Kconfig --out $(DEFCONFIG)
	@echo "Wrote $(DEFCONFIG). Add a first comment line saying what the experiment is."

olddefconfig: .config | $(STAMP)
	$(VENV)/bin/olddefconfig Kconfig
	$(PY) -m scripts.kconfig genconfig

listnewconfig: .config | $(STAMP)
	$(VENV)/bin/listnewconfig Kconfig

# A seed-project defconfig in our terms: FROM=path [TO=defconfigs/<name>]; every line mapped or
# listed as dropped with the reason (docs/configuration.md).
FROM ?=
TO ?=
migrate-defconfig: | $(STAMP)
	@test -n "$(FROM)" || { echo "error: name the seed defconfig: make migrate-defconfig FROM=path [TO=defconfigs/name]" >&2; exit 2; }
	$(PY) -m scripts.migrate_defconfig "$(FROM)" $(if $(TO),--out "$(TO)")

list-defconfigs: | $(STAMP)
	@$(PY) -m scripts.kconfig list

# --- work -----------------------------------------------------------------------------------

data: config.py
	SHAKESPEARE_SOURCE="$(SHAKESPEARE_SOURCE)" LINUXDOC_SOURCE="$(LINUXDOC_SOURCE)" FORTUNES_SOURCE="$(FORTUNES_SOURCE)" \
		$(PY) -m gpt2.prepare_data

# One run, or the test matrix when several optimizers or pruning methods are selected.
train: data
	@if $(PY) -m scripts.run_test_matrix --is-matrix; then \
		$(MAKE) --no-print-directory test-matrix; \
	else \
		$(PY) -m scripts.launch $(if $(RESUME),--resume $(if $(filter 1 y yes,$(RESUME)),,$(RESUME))) $(TRAIN_ARGS); \
	fi

test-matrix: data
	$(PY) -m scripts.run_test_matrix $(if $(DRY_RUN),--dry-run) $(if $(RERUN_FAILED),--rerun-failed) \
		$(if $(RESULTS),--results $(RESULTS)) $(if $(SLURM),--slurm) $(if $(STOP_AFTER),--stop-after $(STOP_AFTER))

test-matrix-dry-run:
	@$(MAKE) --no-print-directory test-matrix DRY_RUN=1

# A hyperparameter sweep over the current configuration: SWEEP=defconfigs/<name>.sweep.toml (values per
# setting; docs/test-matrix.md). DRY_RUN=1 lists the runs; the matrix runner runs, resumes and reports.
SWEEP ?=
sweep: data
	@test -n "$(SWEEP)" || { echo "error: name the sweep file: make sweep SWEEP=defconfigs/<name>.sweep.toml" >&2; exit 2; }
	$(PY) -m scripts.run_test_matrix --sweep "$(SWEEP)" $(if $(DRY_RUN),--dry-run) \
		$(if $(RERUN_FAILED),--rerun-failed) $(if $(RESULTS),--results $(RESULTS)) $(if $(SLURM),--slurm)

# The generative classifier on a labelled file or folder with the current configuration: prepares it,
# trains one model per class (resumable), scores the test split, reports beside a tf-idf baseline.
DATA ?=
classify: config.py
	@test -n "$(DATA)" || { echo "error: name the labelled data: make classify DATA=path.csv (or .tsv, .jsonl, or a folder of class folders)" >&2; exit 2; }
	$(PY) -m scripts.run_test_matrix --classify-data "$(DATA)" $(if $(RESULTS),--results $(RESULTS)) \
		$(if $(RERUN_FAILED),--rerun-failed) $(if $(STOP_AFTER),--stop-after $(STOP_AFTER))

test-matrix-report: | $(STAMP)
	$(PY) -m scripts.run_test_matrix --report-only $(RESULTS)

# docs/results.md's tables, and each kept report, rebuilt from the summaries in docs/results/.
results: | $(STAMP)
	$(PY) -m scripts.results

# Throughput beside a nanoGPT-style baseline (and HF GPT-2 when transformers is installed);
# BENCH_ARGS="--only baseline,adamw" etc. Figures go to docs/benchmarks.md by hand, with the date.
BENCH_ARGS ?=
bench: | $(STAMP)
	$(PY) -m scripts.bench_train $(BENCH_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The paths only a CUDA GPU takes (compiled SPAM step, CUDA threshold, fp16 overflow, auto batch, FP8,
# NVML): run on a GPU machine before every GPU study; skipped elsewhere.
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu tests/test_gpu.py $(PYTEST_ARGS)

# Rewrites tests/golden.json: the pinned losses, sparsity and masks of every combination. Only when a
# change is meant to move them, with the reason in the commit (make test fails until then).
golden: $(STAMP)
	$(PY) -m tests.golden --update

# The opt-in Slurm test against a single-node Slurm on this machine (needs root; installs Debian's slurm-wlm).
test-slurm: $(STAMP)
	scripts/slurm-localhost.sh
	GPT2_TEST_SLURM=1 $(PY) -m pytest -m slurm $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# --- housekeeping ---------------------------------------------------------------------------

clean:
	rm -rf config.py .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

# Also forgets the configuration, the environment and the prepared data; runs/ is kept.
distclean: clean
	rm -rf .config .config.old $(VENV) data

help:
	@echo "Set-up is automatic: the first target that needs it creates $(VENV) from pyproject.toml."
	@echo ""
	@echo "Running"
	@echo "  make                     prepare data if missing, then train what .config describes"
	@echo "                           (no .config: the CPU default, $(DEFAULT_DEFCONFIG))"
	@echo "  make RESUME=1            continue the latest run of this configuration (--out-dir runs too)"
	@echo "  make RESUME=runs/<run>   continue that run, with its own settings"
	@echo "                           GPT2_NPROC_PER_NODE>1 runs it under torchrun (DDP, one GPU each)"
	@echo "  make TRAIN_ARGS='...'    extra gpt2/train.py flags, e.g. --max-iters 100"
	@echo "  make data                prepare the dataset .config names (SHAKESPEARE_SOURCE/LINUXDOC_SOURCE: offline copies)"
	@echo "  make test-matrix         one run per selected combination, then the report (also plain make)"
	@echo "                           DRY_RUN=1 (or make test-matrix-dry-run): the plan only; RERUN_FAILED=1; RESULTS=dir"
	@echo "                           SLURM=1: submit as a Slurm job array + report job; STOP_AFTER=s: a chunk"
	@echo "  make sweep SWEEP=file    a hyperparameter sweep (values per setting in a .sweep.toml), as a matrix"
	@echo "  make test-matrix-report  rebuild the report of the newest (or RESULTS=) results folder"
	@echo "  make classify DATA=path  the generative classifier (one GPT-2 per class) on a labelled"
	@echo "                           .csv/.tsv/.jsonl file or folder of class folders, beside a tf-idf baseline"
	@echo "  make results             rebuild docs/results.md's tables from docs/results/"
	@echo ""
	@echo "Configuring"
	@echo "  make list-defconfigs     the named experiments in defconfigs/"
	@echo "  make defconfig-<name>    load one strictly: every line must take effect"
	@echo "  make menuconfig          browse and change every option"
	@echo "  make savedefconfig       write a minimal defconfig (DEFCONFIG=defconfigs/<name>)"
	@echo "  make olddefconfig        update .config after Kconfig changed (new options get defaults)"
	@echo "  make listnewconfig       list options .config does not set yet"
	@echo "  make migrate-defconfig FROM=path [TO=defconfigs/name]"
	@echo "                           a seed-project defconfig in our terms, every line mapped or dropped with the reason"
	@echo ""
	@echo "Measuring"
	@echo "  make bench               training throughput vs a nanoGPT-style baseline (BENCH_ARGS=...)"
	@echo "                           also: python -m scripts.bench_memory, bench_optim, bench_stop (signal to exit), bench_decode (generation)"
	@echo ""
	@echo "Checking"
	@echo "  make test                the pytest suite (PYTEST_ARGS='-k model' to select)"
	@echo "  make test-gpu            the GPU-only tests, on a CUDA machine (before every GPU study)"
	@echo "  make golden              rewrite tests/golden.json after a change meant to move the numbers"
	@echo "  make test-slurm          the opt-in Slurm test on a localhost Slurm (root; installs slurm-wlm)"
	@echo "  make lint                ruff lint and format check"
	@echo ""
	@echo "Cleaning"
	@echo "  make clean               generated config.py and caches"
	@echo "  make distclean           also .config, $(VENV) and data/ (runs/ is kept)"
