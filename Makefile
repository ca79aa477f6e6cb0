# One virtual environment for everything; `make demo` and `make test` create it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.14.1 torchvision==0.29.1
LOCK   := requirements.lock

.PHONY: setup demo test bench lab lock clean mutation docs

# The set-up installs exactly the versions in requirements.lock (what CI last passed with), then the package
# itself without resolving anything again.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@# Chromium renders plotly figures to PNG (kaleido). Optional: without it figures are HTML only.
	@command -v chromium >/dev/null || command -v google-chrome >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no Chromium (install it for PNG figures); continuing with HTML figures"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	$(BIN)/sassl data prepare
	touch $@

setup: $(VENV)/.installed

# Main job on bundled real data (prepared once into ~/.cache/sassl): a stylization contact sheet, then the
# notebooks through papermill: MoCo v2 + SASSL pre-training on `objects` with the default style source
# (pbn -> bundled paintings), then its evaluation. Re-running resumes / reuses the run. The pre-training
# gets 18 minutes: after epoch 1 it keeps as many of its 9 epochs as fit (all of them on a fast CPU), so the
# whole job stays within 20 minutes on a 2-core machine.
demo: setup
	$(BIN)/sassl demo --out runs/demo
	$(BIN)/sassl notebook pretrain -p name default -p resume true -p time_budget 18
	$(BIN)/sassl notebook evaluate -p encoder default
	@echo "results: runs/default/ (executed notebooks pretrain.ipynb and evaluate.ipynb, eval/summary.csv, figures/)"

# JupyterLab from the project's environment (its kernel has sassl), on 127.0.0.1 with a token, opened on notebooks/.
lab: setup
	$(BIN)/sassl lab

# Two pytest workers (pytest-xdist) with one thread each: most tests are small and single-threaded, so on 2
# cores this takes 0.7x the time of one worker with two threads (docs/TESTING.md).
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --durations=15

# Mutation testing of one module against the fast tests that cover it (not part of `make test`; minutes per
# module): make mutation MODULE=sassl/optim.py  (no MODULE: every module listed in experiments/mutation.py)
mutation: setup
	$(BIN)/python experiments/mutation.py $(MODULE)

# The documentation site (mkdocs-material; API pages from the docstrings) into site/; the tests build it with --strict.
docs: setup
	$(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python -m sassl.bench stylizer

# Re-resolve every dependency in a clean venv and write the lock (then run `make test` and commit it).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q $(TORCH)
	.lock-venv/bin/pip install -q '.[dev]'
	{ echo "# Exact versions 'make setup' installs (Linux x86_64, CPython 3.11), made by 'make lock' from a clean venv."; \
	  echo "# Refresh: make lock && make test, then commit this file."; \
	  .lock-venv/bin/pip freeze --exclude sassl; } > $(LOCK)
	rm -rf .lock-venv build
	@echo "wrote $(LOCK): $$(grep -vc '^#' $(LOCK)) packages; now run make test and commit it"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
