# The two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'  # no .pyc pass: halves the install
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fedcore simulate

# Two workers: the tests that start processes (deployed SuperNodes, Ray) wait on them much
# of the time, in one worker (group "processes"), while the other runs the rest.
test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)  # hours on 2 cores; each script writes its own table in benchmarks/RESULTS.md
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/fedavg_mnist.py
	$(BIN)/python benchmarks/dp_speed.py
	$(BIN)/python benchmarks/dp_mnist.py
	$(BIN)/python benchmarks/dp_fedavg_mnist.py
	$(BIN)/python benchmarks/secagg.py
	$(BIN)/python benchmarks/gcn_cora.py
	$(BIN)/python benchmarks/deploy_latency.py
	$(BIN)/python benchmarks/mf_movielens.py --group mf-movielens
	$(BIN)/python benchmarks/mf_movielens.py --group mf-movielens-dp

clean:
	rm -rf $(VENV) runs
