# The two commands of the README, and the environment they share.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test test-tf220 bench bazel-test clean

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

# The whole test suite (CI runs exactly this). One worker more than the
# cores: with one per core the cores were about 80% busy (docs/benchmarks.md,
# "The test suite's time").
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15

# The plan, TPU and notebook tests (the notebook's: the finetune and export
# apps on the tiny model) and the engine's exactness cases again under the
# TensorFlow of the [tpu] extra (tensorflow-tpu 2.20 is the newest on PyPI),
# on that version's plain CPU wheel, in a second environment (CI runs it
# after test).
VENV_TF220 ?= .venv-tf220
PY_TF220 := $(VENV_TF220)/bin/python
TF220_PINS := tensorflow==2.20.0 tensorflow-text==2.20.1
# The engine: its XLA + bfloat16 + 2 replicas + accumulation exactness case,
# one update per step, filler rows, the fused update.
TF220_TESTS := tests/test_plan.py tests/test_tpu.py tests/test_notebook.py \
	"tests/test_engine.py::test_matrix_matches_one_big_batch_float32[mirrored-mixed_bfloat16-True-4]" \
	tests/test_engine.py::test_a_step_is_one_optimizer_update \
	tests/test_engine.py::test_zero_weight_filler_rows_change_nothing \
	"tests/test_engine.py::test_fused_update_matches_unfused[4]"

$(VENV_TF220)/.installed: pyproject.toml
	test -x $(PY_TF220) || $(PYTHON) -m venv $(VENV_TF220)
	$(PY_TF220) -m pip install --quiet --upgrade pip
	$(PY_TF220) -m pip install --quiet -e ".[test]" $(TF220_PINS)
	touch $@

# -m "not pypi": the [tpu] extra's PyPI check does not depend on TensorFlow
# and already ran in `make test`. TF_CPP_MIN_LOG_LEVEL=3: TensorFlow 2.20's
# CUDA stub logs a cuInit error without a GPU, which came after pytest's
# closing line.
test-tf220: $(VENV_TF220)/.installed
	$(PY_TF220) -c "import tensorflow as tf; assert tf.__version__.startswith('2.20.'), tf.__version__"
	TF_CPP_MIN_LOG_LEVEL=3 $(PY_TF220) -m pytest -q -n 2 -m "not pypi" $(TF220_TESTS)

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
	rm -rf $(VENV) $(VENV_TF220) runs .pytest_cache
