# herdsman: `make demo` runs the example stack, `make test` runs every check CI runs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint pytest system bench clean

$(BIN)/herd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

system:
	@scripts/system-deps

demo: $(BIN)/herd
	@scripts/demo

lint: $(BIN)/herd
	$(BIN)/ruff check herdsman tests bench examples
	$(BIN)/ruff format --check herdsman tests bench examples
	$(BIN)/mypy herdsman
	$(BIN)/lint-imports

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
pytest: $(BIN)/herd
	$(BIN)/pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Everything CI runs; what `system` started (dockerd) is stopped again, pass or fail.
test: $(BIN)/herd
	@scripts/system-deps; $(MAKE) --no-print-directory lint pytest; rc=$$?; scripts/system-stop; exit $$rc

bench: $(BIN)/herd system
	$(BIN)/python bench/bake.py

clean:
	rm -rf $(VENV) examples/hello/.herd .mypy_cache .ruff_cache
