"""A Python toolchain that runs every py_binary and py_test in the project's venv.

Bazel's default toolchain runs whatever `python3` is first on the test's PATH,
which here is the system Python without TensorFlow. This repository rule finds
the interpreter once, when the workspace is loaded, and declares a `py_runtime`
toolchain for it:

1. `$PAINLESS_TF_PYTHON`, if set (a path to a python executable);
2. otherwise `<workspace>/.venv/bin/python`, which `make venv` creates.

Examples:

```
load("//third_party/bazel:venv_python.bzl", "venv_python")
venv_python(name = "venv_python")
register_toolchains("@venv_python//:toolchain")
```
"""

_ENV_VAR = "PAINLESS_TF_PYTHON"

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

py_runtime(
    name = "python3",
    interpreter_path = "{python}",
    python_version = "PY3",
    # The launcher stub must import nothing but the standard library; the
    # venv's own python is the one interpreter known to be there.
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _venv_python_impl(repository_ctx):
    python = repository_ctx.os.environ.get(_ENV_VAR, "")
    if python:
        where = "{}={}".format(_ENV_VAR, python)
    else:
        workspace = repository_ctx.path(Label("@//:WORKSPACE")).dirname
        python = str(workspace) + "/.venv/bin/python"
        where = python
    if not repository_ctx.path(python).exists:
        fail(("{} does not exist. Run `make venv` in the workspace, or set " +
              "{}=/path/to/python (3.11, with painless_tf's dependencies).").format(
            where,
            _ENV_VAR,
        ))
    result = repository_ctx.execute([python, "-c", "import sys; print(sys.version_info[0])"])
    if result.return_code != 0 or result.stdout.strip() != "3":
        fail("{} is not a working Python 3 interpreter: {}".format(
            where,
            (result.stderr or result.stdout).strip(),
        ))
    repository_ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(repository_ctx.name))
    repository_ctx.file("BUILD.bazel", _BUILD.format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = [_ENV_VAR],
    local = True,
    doc = "Declares a Python 3 toolchain for the project's virtual environment.",
)
