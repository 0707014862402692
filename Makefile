# Two commands do all the set-up on a machine with Python >= 3.10 and git:
#   make demo   creates .venv, installs sfda, runs the experiment on the phantom
#   make test   creates .venv, installs sfda, runs the test suite
#   make docs   builds the documentation site into site/
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0; for a CUDA build see README ("Installing a CUDA torch").
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install clean bench docs

$(BIN)/sfda: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	# nnU-Net's networks (sfda.nets.nnunet_nets); --no-deps: its declared timm pulls a torchvision built for CUDA torch
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps "dynamic-network-architectures==0.4.4" einops
	touch $(BIN)/sfda

install: $(BIN)/sfda

demo: $(BIN)/sfda
	OMP_WAIT_POLICY=PASSIVE $(BIN)/sfda experiment configs/phantom.yaml --out demo

test: $(BIN)/sfda
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

docs: $(BIN)/sfda
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

bench: $(BIN)/sfda
	$(BIN)/python bench/throughput.py

clean:
	rm -rf demo runs site .pytest_cache
