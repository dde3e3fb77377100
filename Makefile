# vlmr: `make install`, `make test`, `make lint`, `make demo`
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check vlmr finetune calibrate rl tests

clean:
	rm -rf $(VENV) .pytest_cache

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/vlmr pipeline babyai_demo

bench: $(STAMP)
	$(BIN)/vlmr bench --quick
