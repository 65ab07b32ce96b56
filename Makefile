# Two commands on a fresh machine:  `make demo` (set up + train on the bundled data)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/multi30k_en_de.py

.PHONY: setup demo train test lint bench clean

setup: $(VENV)/.installed

# Idempotent: re-runs only when pyproject.toml changes. torch is installed first, pinned, so that nothing pulls a
# CUDA build.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) train.py --config configs/multi30k_en_de_demo.py
	@echo "--- a few validation sentences, translated with beam search by the demo model:"
	zcat data/multi30k/val.en.gz | head -n 3 | $(PY) -m jax_transformer.translate runs/multi30k_en_de_demo --beam 4

train: setup
	$(PY) train.py --config $(CONFIG)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs
