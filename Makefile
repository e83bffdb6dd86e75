# Two commands on a fresh machine with Python 3.11: `make eval` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: eval test lint format bench mutate clean-venv

# The venv is (re)built when requirements.txt changes; only the package index is needed.
$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Developer tools on top (mutmut); not needed to run or test.
$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Both tables on the synthetic test sets (generated on first use, seeded) with the shipped open checkpoints, then on
# the real-motion BANDAI test sets when they have been built (docs/motion_data.md).
eval: $(VENV)/.installed
	$(PY) eval_smpl.py --cfg configs/smpl/open_eval.yaml
	$(PY) eval_smplx.py --cfg configs/smplx/open_eval.yaml
	@if [ -f data/open/smpl/db/bandai_test_db.pt ] && [ -f data/open/smplx/db/bandai_test_db.pt ]; then \
		$(PY) eval_smpl.py --cfg configs/smpl/open_eval.yaml TRAIN.DATASET_EVAL BANDAI && \
		$(PY) eval_smplx.py --cfg configs/smplx/open_eval.yaml TRAIN.DATASET_EVAL BANDAI; \
	else \
		echo "Real-motion tables (BANDAI) skipped: git clone https://github.com/BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset, then $(PY) tools/make_motion_db.py --source Bandai-Namco-Research-Motiondataset/dataset (docs/motion_data.md)"; \
	fi

# The linter and the format check first (seconds), then the test suite.
test: lint
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrites files: the fixable lint findings and the formatting.
format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed
	$(PY) bench/bench_solver.py

# Mutation testing of lib/kinematics, lib/solver, lib/io and the body-model unpickler (an hour or more on 2 cores;
# not in CI).
# Results: `$(VENV)/bin/mutmut results`; survivors are explained in docs/testing.md.
mutate: $(VENV)/.dev-installed
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

clean-venv:
	rm -rf $(VENV)
