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

.PHONY: env test demo train plan

env: $(STAMP)

# Reinstall only when the package metadata changes; an existing venv makes this a no-op.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: env
	$(PY) -m pytest -q

demo: env
	$(PY) -m pipeline submit --exp demo --out $(OUT) $(SET_ARGS)

train: env
	$(PY) -m pipeline train --group rot --mode aug --augment orbit --epochs 5 --n-samples 1000 --channels 8

plan: env
	$(PY) -m pipeline plan --exp $(EXP) $(SET_ARGS)
