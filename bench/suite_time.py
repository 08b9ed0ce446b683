"""Where the test suite's time goes, from pytest's JUnit XML.

    .venv/bin/python -m pytest -q -n 2 --durations=0 --junitxml=/tmp/suite.xml
    python -m bench.suite_time /tmp/suite.xml --slowest=20

pytest writes each test's setup + call + teardown seconds into the XML. The
sum over tests is worker-seconds: with `-n 2` the wall time is about half of
it when both workers stay busy. The tables say which files and which tests
to make smaller (issue 24 asks for the suite under 10 minutes); the numbers
depend on the machine and its load, so they are read, never asserted.
"""

import collections
import sys
import xml.etree.ElementTree as ElementTree

from absl import app
from absl import flags

_SLOWEST = flags.DEFINE_integer(
    "slowest", 20, "Rows of the slowest-tests table.")


def read(path) -> list[tuple[str, str, float]]:
    """`(file, test, seconds)` of every test case in a JUnit XML file.

    Examples:
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
    ...     _ = f.write('<testsuites><testsuite><testcase '
    ...                 'classname="tests.test_a" name="test_x" time="1.5"/>'
    ...                 '</testsuite></testsuites>')
    ...     f.flush()
    ...     read(f.name)
    [('test_a', 'test_x', 1.5)]
    """
    root = ElementTree.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        cases.append((module, case.get("name", ""),
                      float(case.get("time") or 0.0)))
    return cases


def by_file(cases) -> list[tuple[str, int, float]]:
    """`(file, tests, seconds)`, the most seconds first.

    Examples:
    >>> by_file([("a", "x", 1.0), ("b", "y", 3.0), ("a", "z", 1.5)])
    [('b', 1, 3.0), ('a', 2, 2.5)]
    """
    seconds = collections.defaultdict(float)
    counts = collections.Counter()
    for module, _, duration in cases:
        seconds[module] += duration
        counts[module] += 1
    return sorted(((m, counts[m], s) for m, s in seconds.items()),
                  key=lambda row: (-row[2], row[0]))


def markdown(cases, slowest: int) -> str:
    """The per-file table and the slowest tests, as markdown."""
    total = sum(duration for _, _, duration in cases)
    lines = [f"{len(cases)} tests, {total:.0f} worker-seconds", "",
             "| file | tests | seconds | share |", "|---|---|---|---|"]
    for module, count, seconds in by_file(cases):
        share = seconds / total if total else 0.0
        lines.append(f"| {module} | {count} | {seconds:.1f} | "
                     f"{100 * share:.1f}% |")
    lines += ["", "| slowest test | seconds |", "|---|---|"]
    for module, name, seconds in sorted(cases, key=lambda c: -c[2])[:slowest]:
        lines.append(f"| {module}::{name} | {seconds:.1f} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Pass one JUnit XML file: "
                             "python -m bench.suite_time /tmp/suite.xml")
    try:
        cases = read(argv[1])
    except (OSError, ElementTree.ParseError) as e:
        print(f"{argv[1]}: not a readable JUnit XML file ({e}). Write one "
              "with pytest --junitxml=FILE.", file=sys.stderr)
        return 1
    print(markdown(cases, _SLOWEST.value))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
