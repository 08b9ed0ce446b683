# The two commands of the README, and the environment they share.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test bench bazel-test clean

venv: $(VENV)/.installed

# Re-installs whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Fine-tunes the default model on the default data; writes runs/demo.
demo: venv
	$(PY) -m apps.finetune --model_dir=runs/demo

# The whole test suite (CI runs exactly this).
test: venv
	$(PY) -m pytest -q -n 2 --durations=15

# Benchmarks, side by side in one run (quick mode; see docs/benchmarks.md).
bench: venv
	$(PY) -m bench.run --suite=quick

# Offline Bazel build (third_party/bazel/README.md): Debian's Bazel 4.2 and rules_java.
BAZEL_DEBS := bazel-bootstrap bazel-rules-java
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

bazel-test: venv
	@command -v bazel >/dev/null && test -d /usr/share/bazel/rules/java || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y $(BAZEL_DEBS); }
	PAINLESS_TF_PYTHON=$(abspath $(PY)) bazel test //...

clean:
	rm -rf $(VENV) runs .pytest_cache
