# Everything a researcher types. Variables: EXP (grid preset or file), OUT (results folder),
# CLUSTER (profile under slurm/profiles), SET (space-separated key=value overrides).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXP ?= demo
OUT ?= results/$(EXP)
CLUSTER ?= local
SET ?=
SET_ARGS := $(foreach s,$(SET),--set $(s))

.PHONY: env test demo train plan submit status resubmit cancel aggregate slurm-up slurm-down bench gpu-check

env: $(STAMP)

# Reinstall only when the package metadata changes; an existing venv makes this a no-op.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: env
	$(PY) -m pytest -q

# The main job on this machine, no SLURM needed: the demo grid through submitit's local executor,
# then its tables, figures and report.
demo: env
	$(PY) -m pipeline submit --exp demo --out results/demo --cluster local $(SET_ARGS)
	$(PY) -m pipeline aggregate --out results/demo
	@echo "report: results/demo/aggregate/report.md"

submit: env
	$(PY) -m pipeline submit --exp $(EXP) --out $(OUT) --cluster $(CLUSTER) $(SET_ARGS) $(if $(WAIT),--wait,)

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

# On a CUDA machine: smoke grids on the GPU, TF32 check, packing tests on CUDA, benchmark rows 1, 1b, 3, 4, measured GPU-hours.
gpu-check: env
	$(PY) bench/gpu_check.py

slurm-up:
	bash slurm/cluster/slurm-local.sh up

slurm-down:
	bash slurm/cluster/slurm-local.sh down

train: env
	$(PY) -m pipeline train --group rot --mode aug --augment orbit --epochs 5 --n-samples 1000 --channels 8

plan: env
	$(PY) -m pipeline plan --exp $(EXP) $(SET_ARGS)
