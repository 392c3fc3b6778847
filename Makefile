# Everything a researcher types. Variables: EXP (grid preset or file), OUT (results folder),
# CLUSTER (profile under slurm/profiles), SET (space-separated key=value overrides), CUDA (the torch build
# `make env` installs: 13, the default, or 12 for clusters whose drivers serve CUDA 12 only).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PROJECT := equivariance-dynamics
EXTRAS := test,tensorboard,wandb
# The CUDA build of torch: 13 (PyPI's torch, driver >= 580.65.06) or 12 (torch +cu126, driver >= 525.60.13).
CUDA ?= 13
ifeq ($(CUDA),13)
  CONSTRAINTS := constraints.txt
else ifeq ($(CUDA),12)
  CONSTRAINTS := constraints-cuda12.txt
else
  $(error CUDA=$(CUDA) is not a build this project offers; accepted: 13 (the default; NVIDIA driver >= 580.65.06) or 12 (driver >= 525.60.13))
endif
STAMP := $(VENV)/.installed-cuda$(CUDA)

# Which Python runs every target: PY=... (command line or environment) wins; else the activated virtualenv
# ($$VIRTUAL_ENV) or conda environment ($$CONDA_PREFIX) when the project is installed in it (a cluster user
# who ran `conda activate eqdyn` must not get a second, pip-built environment); else .venv, built by
# `make env`. `make env` says which one it uses. The check runs isolated (-I), so that the checkout's own
# egg-info in the working directory cannot pass for an installed project.
has_project = $(shell test -x '$(1)/bin/python' && '$(1)/bin/python' -I -c 'import importlib.metadata as m; m.distribution("$(PROJECT)")' >/dev/null 2>&1 && echo yes)
ACTIVE_ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ACTIVE_NAME := $(if $(VIRTUAL_ENV),the virtualenv $(VIRTUAL_ENV),the conda environment $(CONDA_DEFAULT_ENV) ($(CONDA_PREFIX)))
ifneq ($(filter command line environment,$(origin PY)),)
  PY_WHY := PY=$(PY), as given
else ifneq ($(ACTIVE_ENV),)
  ifeq ($(call has_project,$(ACTIVE_ENV)),yes)
    PY := $(ACTIVE_ENV)/bin/python
    PY_WHY := $(ACTIVE_NAME), which has the project installed
  else
    PY := $(VENV)/bin/python
    # conda's base environment is active for many users without meaning anything: say nothing about it.
    ifneq ($(if $(VIRTUAL_ENV),,$(CONDA_DEFAULT_ENV)),base)
      PY_NOTE := note: $(ACTIVE_NAME) is active but does not have the project installed (there: pip install -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'); using $(VENV)
    endif
    PY_WHY := $(VENV), the project's own environment
  endif
else
  PY := $(VENV)/bin/python
  PY_WHY := $(VENV), the project's own environment
endif
OWN_VENV := $(if $(filter $(VENV)/bin/python,$(PY)),yes,)
EXP ?= demo
OUT ?= results/$(EXP)
CLUSTER ?= local
SET ?=
SET_ARGS := $(foreach s,$(SET),--set $(s))

.PHONY: env test lint demo smoke train plan submit status resubmit cancel aggregate slurm-up slurm-down bench gpu-check crash-states

ifeq ($(OWN_VENV),yes)
env: $(STAMP)
	@echo "interpreter: $(PY) ($(PY_WHY))"
else
# Another environment is the user's: nothing is built or installed into it, only checked.
env:
	@echo "interpreter: $(PY) ($(PY_WHY)); .venv is not built"
	@$(PY) -c 'import h5py, submitit, pipeline.cli' || { echo "error: $(PY) cannot import the project and its dependencies; install it there with: $(PY) -m pip install -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'" >&2; exit 2; }
endif
	$(if $(PY_NOTE),@echo "$(PY_NOTE)",)

# Reinstall only when the package metadata changes (or CUDA= names the other build); an existing venv makes
# this a no-op.
$(STAMP): pyproject.toml constraints.txt $(CONSTRAINTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-cuda*
	touch $(STAMP)

test: env lint
	$(PY) -m pytest -q

# ruff and mypy, configured in pyproject.toml; `make test` (hence CI) runs them first.
lint: env
	$(PY) -m ruff check .
	$(PY) -m mypy

# The main job on this machine, no SLURM needed: the demo grid through submitit's local executor,
# then its tables, figures and report.
demo: env
	$(PY) -m pipeline submit --exp demo --out results/demo --cluster local $(SET_ARGS)
	$(PY) -m pipeline aggregate --out results/demo
	@echo "report: results/demo/aggregate/report.md"

submit: env
	$(PY) -m pipeline submit --exp $(EXP) --out $(OUT) --cluster $(CLUSTER) $(SET_ARGS) $(if $(WAIT),--wait,) $(if $(ALLOW_LONG_LOCAL),--allow-long-local,)

# Does this cluster run the pipeline? The smoke grid on CLUSTER's nodes (every group, mode, CNN variant and
# Experiment S network at toy size, and one epoch at the paper's width to time), waited for, then a verdict on
# one screen: CUDA seen, GPU model, driver, speed against pipeline/launch/throughput.py. Minutes, not hours.
SMOKE_OUT ?= results/smoke-$(notdir $(basename $(CLUSTER)))
smoke: env
	$(PY) -m pipeline smoke --cluster $(CLUSTER) --out $(SMOKE_OUT) $(SET_ARGS)

status: env
	$(PY) -m pipeline status --out $(OUT)

# The grid's own profile unless CLUSTER is given: a bare `make resubmit` must not run trials on the login node.
CLUSTER_GIVEN := $(if $(filter command line environment,$(origin CLUSTER)),--cluster $(CLUSTER),)

resubmit: env
	$(PY) -m pipeline resubmit --out $(OUT) $(CLUSTER_GIVEN)

cancel: env
	$(PY) -m pipeline cancel --out $(OUT)

aggregate: env
	$(PY) -m pipeline aggregate --out $(OUT)

# Speed and memory, each row beside its reference in one run (not part of `make test`).
bench: env
	$(PY) bench/run.py

# Every state a crash can leave, at every point of a trial (commits, a failure, a takeover, a resume) and of
# the folder's own files, under each persistence model, each recovered and judged (tests/crash; needs strace;
# about 10 minutes here). `make test` explores a bounded sample of them.
crash-states: env
	$(PY) -m tests.crash.explore

# On a CUDA machine, within GPU_CHECK_MIN minutes (a lease is 15 minutes in all, its start included): row 1b
# with and without the background writer, the smoke grids on the GPU (and the writer's files against direct
# writes), then paper-lite at the paper's sizes with the minutes left, its aggregate into
# docs/results/paper-lite/. SECTIONS=tests,tf32,bench,hours runs the other checks (a second lease).
# `timeout` is the backstop should a section hang: the script itself keeps to its deadline.
GPU_CHECK_MIN ?= 10
SECTIONS ?= 1b,smoke,paper-lite
gpu-check: env
	timeout $$(( ($(GPU_CHECK_MIN) + 2) * 60 )) $(PY) bench/gpu_check.py --deadline-minutes $(GPU_CHECK_MIN) --sections $(SECTIONS)

slurm-up:
	bash slurm/cluster/slurm-local.sh up

slurm-down:
	bash slurm/cluster/slurm-local.sh down

train: env
	$(PY) -m pipeline train --group rot --mode aug --augment orbit --epochs 5 --n-samples 1000 --channels 8

# A summary by cell: compute, estimated time and GPU-hours on CLUSTER's GPU, storage, the job arrays.
plan: env
	$(PY) -m pipeline plan --exp $(EXP) --cluster $(CLUSTER) $(SET_ARGS)
