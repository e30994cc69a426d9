# sincere — the user's front door. `make install` once, then `make test`.
#
#   make pretrain DATASET=cifar10 LOSS=sincere              the paper's setting (a GPU)
#   make pretrain DATASET=fashion-mnist LOSS=supcon CONFIG=mini ARGS="epochs=2"
#   make pretrain DATASET=cifar10 LOSS=sincere GPUS=4      4 GPUs (torchrun + DDP, global batch)
#   make pretrain ... GPUS=4 NNODES=2 NODE_RANK=0 MASTER_ADDR=node0   on each of 2 nodes (c10d)
#   (pretraining continues its run when rerun: resume=auto; a stop signal exits 75)
PYTHON_BASE ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# PYTHON: an interpreter to run gpu-check with as it is (e.g. a GPU machine's own PyTorch:
# `make gpu-check PYTHON=python3`): nothing is installed, no venv is made, nothing is downloaded;
# it needs torch, torchvision, numpy, pyyaml, tqdm, tensorboard and pytest. Unset: the venv's
# python, installed first.
PYTHON      ?=
GPU_CHECK_ARGS ?=

DATASET ?= cifar10
LOSS    ?= sincere
CONFIG  ?= paper
ARGS    ?=
GPUS    ?=
NNODES      ?= 1
NODE_RANK   ?= 0
MASTER_ADDR ?=
MASTER_PORT ?= 29500
RDZV_ID     ?= $(RUN_NAME)
# GPUS=N (N > 1) launches N processes with torchrun, one per GPU; unset or 1 is a plain python.
# NNODES=M (M > 1): run the same command on each of M nodes with its NODE_RANK (0 hosts the
# rendezvous) and the MASTER_ADDR of node 0: torchrun's c10d rendezvous joins the
# M x GPUS processes (RDZV_ID, default the run name, tells concurrent jobs apart).
MULTINODE_LAUNCH = $(VENV)/bin/torchrun --nnodes=$(NNODES) --nproc-per-node=$(or $(GPUS),1) \
	--rdzv-backend=c10d --rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT) --rdzv-id=$(RDZV_ID) \
	--rdzv-conf=is_host=$(if $(filter 0,$(NODE_RANK)),1,0)
PRETRAIN_LAUNCH = $(if $(filter-out 0 1,$(NNODES)),$(MULTINODE_LAUNCH),$(if \
	$(filter-out 0 1,$(GPUS)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(GPUS),$(PY)))
CONFIG_FILE := configs/$(CONFIG)/$(subst -,_,$(DATASET)).yaml
# Run names come from sincere.runs.run_name (runs/<dataset>-<loss>[-<config>], no suffix for
# paper), asked of the venv's python: recursively expanded, so only recipes that run after
# `install` use them.
run_name     = $(or $(shell $(PY) -m sincere.runs name $(DATASET) $(1) $(CONFIG)),$(error \
	cannot compute the run name with $(PY) -m sincere.runs: run make install))
RUN_NAME     = $(call run_name,$(LOSS))
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist

LINEAR_CONFIG := configs/linear/$(CONFIG).yaml
FIGURES_OUT   := $(DATASET)$(if $(filter paper,$(CONFIG)),,-$(CONFIG))
EXPERIMENT    ?= main
# Figure 3's class for make figures; empty: the dataset's (sincere.data.DATASETS)
FIG3_CLASS    ?=

LINEAR_ARGS ?=
FORCE       ?=
REPRO_FLAGS ?=
# SEEDS=N trains every arm with seeds 0..N-1 (SEEDS=7,8,9: those seeds); JOBS=N runs N
# pretraining runs at a time. reproduce-mini, reproduce-cpu and reproduce-hard-negatives default
# to 3 seeds (reproduce-mini EXPERIMENT=hard-negatives to 1) and 2 single-threaded runs at once;
# reproduce-paper to 1 seed, 1 run.
SEEDS       ?=
JOBS        ?=
SEED_FLAGS   = $(if $(SEEDS),--seeds $(SEEDS)) $(if $(JOBS),--jobs $(JOBS))

.PHONY: help install test test-fast test-slurm pretrain linear-eval figures reproduce-mini reproduce-cpu reproduce-hard-negatives \
	reproduce-paper data bench-losses bench-chunked bench-train bench-probe compare-precision gpu-check clean-venv \
	notebooks

help:
	@echo "make reproduce-mini   the paper's claims on a CPU: pretrain SupCon and SINCERE, linear"
	@echo "                      probes, tables and figures -> results/mini/ (FORCE=1 redoes)"
	@echo "                      SEEDS=N (or SEEDS=7,8,9): every arm per seed, across-seed tests"
	@echo "make reproduce-cpu    the CPU setting: 3 seeds x SupCon/SINCERE + half-length runs"
	@echo "                      (convergence check) + baselines, 2 runs at a time -> results/cpu/"
	@echo "                      (about 80 min on 2 cores)"
	@echo "make reproduce-paper  DATASET=cifar10|cifar100: the same with the paper's setting (GPU);"
	@echo "                      CONFIG=official: the authors' code as run (docs/FIDELITY.md)"
	@echo "make install       create .venv with everything (idempotent)"
	@echo "make test          install if needed, then run the test suite"
	@echo "make test-fast     the same without the tests marked slow (chains, multi-process runs,"
	@echo "                   signals, notebooks, longer trainings): every module's fast tests"
	@echo "make test-slurm    scripts/slurm/pretrain.sbatch on a one-node SLURM on localhost (root;"
	@echo "                   installs slurm-wlm, munge): stop mid-epoch, requeue, resume (~3.5 min)"
	@echo "make pretrain      DATASET=cifar10|cifar100|fashion-mnist LOSS=sincere|supcon|... "
	@echo "                   CONFIG=paper|official|mini ARGS=\"key=value ...\" -> runs/<dataset>-<loss>[-<config>]/"
	@echo "                   GPUS=N: N GPUs via torchrun + DDP; batch_size stays the global batch"
	@echo "                   and the loss sees all of it (ARGS=\"distributed.loss_scope=per_gpu\""
	@echo "                   for per-GPU losses, distributed.sync_bn=true for global BatchNorm)"
	@echo "                   NNODES=M NODE_RANK=r MASTER_ADDR=host [MASTER_PORT=29500]: one of M"
	@echo "                   nodes (torchrun c10d rendezvous); scripts/slurm/pretrain.sbatch for SLURM"
	@echo "                   Rerunning continues the run (resume=auto); SIGTERM/SIGINT/SIGUSR1"
	@echo "                   checkpoint the step reached and exit 75 (make reports Error 75)"
	@echo "make linear-eval   linear probe of runs/<dataset>-<loss>[-<config>]/ (same DATASET/LOSS/CONFIG)"
	@echo "                   -> linear/"
	@echo "make figures       Tables 1-2, Figures 2, 3, A.1, t-SNE of the supcon and sincere runs"
	@echo "                   of DATASET/CONFIG -> results/$(FIGURES_OUT)/"
	@echo "make data          install Fashion-MNIST (Debian package) into data/"
	@echo "make reproduce-hard-negatives   Jiang et al.'s SCL, H-SCL, H-UCL in both forms of the"
	@echo "                      losses, 3 seeds, the CPU setting at 9 epochs -> results/hard-negatives/"
	@echo "                      (~82 min with native bf16, ~165 min without)"
	@echo "make reproduce-mini EXPERIMENT=hard-negatives   the same at the minutes scale"
	@echo "                      -> results/hard-negatives-mini/"
	@echo "make bench-losses  loss forward+backward time and memory -> results/benchmarks/losses.md"
	@echo "make bench-chunked chunked (memory-bounded) losses at 65,536 views -> results/benchmarks/chunked.md"
	@echo "make bench-train   data pipeline and training-step views/s -> results/benchmarks/training.md"
	@echo "make bench-probe   the linear probe's loop on cached features -> results/benchmarks/probe.md"
	@echo "make compare-precision   fp32 vs bf16 training, same seeds -> results/precision/"
	@echo "                   (PRECISION_CONFIG=configs/cpu/fashion_mnist.yaml: the CPU setting)"
	@echo "make notebooks     execute notebooks/*.ipynb in place (after regenerating results/)"
	@echo "make gpu-check     on a CUDA GPU (<= 8 min): the CUDA tests, the paper setting's speed"
	@echo "                   -> results/benchmarks/gpu.md; PYTHON=python3 uses that interpreter"
	@echo "                   as it is (no venv, no install); without CUDA it exits 2 at once"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

# A private one-node SLURM cluster for the test's duration; no daemon outlives it (docs/SLURM.md).
test-slurm: install data
	scripts/slurm/local_cluster.sh $(PY) -m pytest tests/test_slurm.py -p no:cacheprovider

# Fashion-MNIST ships as a Debian package; install it when apt-get is usable (root), then copy
# it into data/. Elsewhere the loader downloads it.
data: install
	@if [ ! -d $(FASHION_MNIST_DEB_DIR) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || \
		 (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; fi
	@if [ -d $(FASHION_MNIST_DEB_DIR) ]; then \
		$(PY) -c "from sincere.data import install_fashion_mnist as i; print('Fashion-MNIST in', i('data'))"; \
	else echo "Debian's dataset-fashion-mnist is not installed: the loader will download Fashion-MNIST"; fi

pretrain: install $(if $(filter fashion-mnist,$(DATASET)),data)
	@test -f $(CONFIG_FILE) || { echo "no config $(CONFIG_FILE): CONFIG is paper or mini"; \
		ls configs/*/*.yaml; exit 2; }
	$(if $(filter-out 0 1,$(NNODES)),@test -n "$(MASTER_ADDR)" || { echo "NNODES=$(NNODES)" \
		"needs MASTER_ADDR=<host name or address of the NODE_RANK=0 node>"; exit 2; })
	$(PRETRAIN_LAUNCH) scripts/pretrain.py $(CONFIG_FILE) loss=$(LOSS) name=$(RUN_NAME) resume=auto $(ARGS)

linear-eval: install
	$(PY) scripts/linear_eval.py $(LINEAR_CONFIG) run_dir=runs/$(RUN_NAME) $(ARGS)

figures: install
	$(PY) scripts/make_figures.py runs/$(call run_name,supcon) \
		runs/$(call run_name,sincere) \
		--out results/$(FIGURES_OUT) $(if $(FIG3_CLASS),--fig3-class "$(FIG3_CLASS)")

reproduce-mini: install data
	$(PY) scripts/reproduce.py --config mini --experiment $(EXPERIMENT) $(if $(FORCE),--force) \
		--jobs $(or $(JOBS),2) --seeds $(or $(SEEDS),$(if $(filter main,$(EXPERIMENT)),3,1)) \
		$(REPRO_FLAGS) \
		--args $(ARGS) --linear-args $(LINEAR_ARGS)

reproduce-cpu: install data
	$(PY) scripts/reproduce.py --config cpu $(if $(FORCE),--force) --convergence \
		--seeds $(or $(SEEDS),3) --jobs $(or $(JOBS),2) $(REPRO_FLAGS) \
		--args $(ARGS) --linear-args $(LINEAR_ARGS)

# Jiang et al.'s hard negatives in both forms of the losses, 3 seeds, in the CPU setting's
# hard-negative variant (docs/CPU_SETTING.md) -> results/hard-negatives/
reproduce-hard-negatives: install data
	$(PY) scripts/reproduce.py --config cpu --experiment hard-negatives $(if $(FORCE),--force) \
		--seeds $(or $(SEEDS),3) --jobs $(or $(JOBS),2) $(REPRO_FLAGS) \
		--args $(ARGS) --linear-args $(LINEAR_ARGS)

reproduce-paper: install
	$(PY) scripts/reproduce.py --config $(CONFIG) --dataset $(DATASET) $(if $(FORCE),--force) $(REPRO_FLAGS) \
		$(SEED_FLAGS) --args $(ARGS) --linear-args $(LINEAR_ARGS)

bench-losses: install
	$(PY) scripts/bench_losses.py

bench-chunked: install
	$(PY) scripts/bench_chunked.py

bench-train: install data
	$(PY) scripts/bench_train.py

bench-probe: install
	$(PY) scripts/bench_probe.py

notebooks: install
	$(PY) scripts/run_notebooks.py

compare-precision: install data
	$(PY) scripts/compare_precision.py $(if $(PRECISION_CONFIG),--config $(PRECISION_CONFIG)) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(ARGS),--args $(ARGS))

# With PYTHON set the install step is skipped and the package is found through PYTHONPATH.
gpu-check: $(if $(PYTHON),,install)
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(or $(PYTHON),$(PY)) \
		scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
