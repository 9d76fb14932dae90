# Two commands on a fresh clone (only python3 and pip needed):
#   make demo   -> the main job on the embedded default (synthetic rooms, tiny preset, CPU); again into the same
#                  demo_out: make demo DEMO_FLAGS=--overwrite
#   make test   -> the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# torch first and pinned: the CPU build here; pip would otherwise resolve a CUDA build.
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt torch
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/loc3r demo --out demo_out $(DEMO_FLAGS)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_out
