# Fresh machine with only Python 3.10+: `make demo` or `make test` sets everything up in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARCH   := $(shell uname -m)
# torch and torchvision in one command, versions that match (CPU and CUDA builds both run on CPU)
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -c "import torchvision.ops, abtem, ase, zarr, distributed"
	touch $@

demo: setup  ## the whole job on the bundled example: library -> energies -> inference -> report (demo_output/)
	$(BIN)/surrogate-build-library
	$(BIN)/surrogate-annotate-energies --library demo_library --checkpoint checkpoints/potential_cdte.pt checkpoints/potential_si.pt --no-progress
	$(BIN)/surrogate-infer image=data/examples/cdte_twin_haadf.tif library_dir=demo_library \
		checkpoint=checkpoints/embedding_demo.pt 'retrieval.elements=[Cd,Te,Se,Cl]' hydra.run.dir=demo_output
	@echo "open demo_output/report.html"

test: setup  ## fast test suite (slow tests excluded)
	$(BIN)/python -c "import torchvision.ops"
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

bench: setup
	$(BIN)/python benchmarks/simulation.py

clean:
	rm -rf demo_library demo_output logs outputs
