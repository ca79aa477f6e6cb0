# One virtual environment for everything; `make demo` and `make test` create it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	@# Chromium renders plotly figures to PNG (kaleido). Optional: without it figures are HTML only.
	@command -v chromium >/dev/null || command -v google-chrome >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no Chromium (install it for PNG figures); continuing with HTML figures"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/sassl data prepare
	touch $@

setup: $(VENV)/.installed

# Main job on bundled real data (prepared once into ~/.cache/sassl): stylization contact sheet, then
# MoCo v2 + SASSL pre-training on `objects` with the default (pbn -> bundled paintings) style source.
demo: setup
	$(BIN)/sassl demo --out runs/demo
	$(BIN)/sassl pretrain --name default --resume

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m sassl.bench stylizer

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
