# Two commands on a fresh machine with Python 3.11: `make eval` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: eval test bench clean-venv

# The venv is (re)built when requirements.txt changes; only the package index is needed.
$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Both tables on the synthetic test sets (generated on first use, seeded) with the shipped open checkpoints.
eval: $(VENV)/.installed
	$(PY) eval_smpl.py --cfg configs/smpl/open_eval.yaml
	$(PY) eval_smplx.py --cfg configs/smplx/open_eval.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/bench_solver.py

clean-venv:
	rm -rf $(VENV)
