"""Runs one test file with pytest: the `main` of every Bazel py_test.

Bazel starts it with the test file's runfiles path as the only argument
(`args = ["$(rootpath tests/test_plan.py)"]` in BUILD.bazel), from the root of
the runfiles tree. It maps Bazel's test protocol onto pytest's flags: the
JUnit XML file Bazel collects, the private scratch directory, and
`bazel test --test_filter=NAME`, which becomes `pytest -k NAME`. It also
puts its own interpreter (the project's venv) first on PATH, for tests that
start `python3` or `$PYTHON` subprocesses.

Examples:

```
bazel test //:test_plan                            # pytest tests/test_plan.py
bazel test //:test_plan --test_filter=reasons      # ... -k reasons
```
"""

import os
import sys

import pytest


def pytest_args(test_file, environ):
    """Returns the pytest command line for one test file under Bazel.

    Args:
        test_file: str. Path of the test file, as Bazel passes it.
        environ: Mapping[str, str]. The test's environment (`os.environ`).

    Returns:
        list[str]. Arguments for `pytest.main`.

    Examples:

    >>> pytest_args("tests/test_plan.py", {"TESTBRIDGE_TEST_ONLY": "reasons"})
    ['tests/test_plan.py', '-p', 'no:cacheprovider', '-k', 'reasons']
    """
    # The runfiles tree is read-only to the test, so pytest keeps no cache.
    args = [test_file, "-p", "no:cacheprovider"]
    if environ.get("TEST_TMPDIR"):
        # tmp_path directories then live in Bazel's per-test scratch space,
        # which Bazel cleans, instead of a shared /tmp.
        args += ["--basetemp", os.path.join(environ["TEST_TMPDIR"], "pytest")]
    if environ.get("XML_OUTPUT_FILE"):
        args += ["--junitxml", environ["XML_OUTPUT_FILE"]]
    if environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", environ["TESTBRIDGE_TEST_ONLY"]]
    return args


def activate_interpreter(environ, executable):
    """Puts the running interpreter first on PATH, as an activated venv would.

    Bazel gives tests a fixed PATH (/bin:/usr/bin:/usr/local/bin), whose
    `python3` lacks TensorFlow. Tests and scripts that start `python3`, or
    `$PYTHON`, then get the interpreter Bazel runs the tests with.

    Args:
        environ: MutableMapping[str, str]. Environment to change in place.
        executable: str. Path of the interpreter (`sys.executable`).

    Examples:

    >>> env = {"PATH": "/usr/bin"}
    >>> activate_interpreter(env, "/work/.venv/bin/python")
    >>> env["PATH"], env["PYTHON"]
    ('/work/.venv/bin:/usr/bin', '/work/.venv/bin/python')
    """
    folder = os.path.dirname(executable)
    paths = environ.get("PATH", "").split(os.pathsep)
    environ["PATH"] = os.pathsep.join([folder] + [p for p in paths if p != folder])
    environ.setdefault("PYTHON", executable)


def isolate_home(environ):
    """Gives the test a fresh, writable HOME inside Bazel's scratch directory.

    Bazel passes the caller's HOME through, but its sandbox mounts that
    read-only: caches under ~/.cache, ~/.keras or ~/.config then fail to
    write, and a cache left by earlier runs would make results depend on
    the machine. Outside Bazel (no TEST_TMPDIR) nothing changes.

    Args:
        environ: MutableMapping[str, str]. Environment to change in place.

    Examples:

    >>> import tempfile
    >>> scratch = tempfile.mkdtemp()
    >>> env = {"HOME": "/root", "TEST_TMPDIR": scratch}
    >>> isolate_home(env)
    >>> env["HOME"] == os.path.join(scratch, "home"), os.path.isdir(env["HOME"])
    (True, True)
    """
    if not environ.get("TEST_TMPDIR"):
        return
    home = os.path.join(environ["TEST_TMPDIR"], "home")
    os.makedirs(home, exist_ok=True)
    environ["HOME"] = home


def main(argv):
    if len(argv) != 2:
        print(
            f"usage: {argv[0]} TEST_FILE. Received {len(argv) - 1} arguments: "
            f"{argv[1:]}. Pass exactly one tests/test_*.py path.",
            file=sys.stderr,
        )
        return 2
    # Bytecode would be written into the runfiles tree, next to the sources.
    sys.dont_write_bytecode = True
    activate_interpreter(os.environ, sys.executable)
    isolate_home(os.environ)
    return int(pytest.main(pytest_args(argv[1], os.environ)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
