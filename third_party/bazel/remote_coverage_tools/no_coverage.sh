#!/bin/sh
# Only `bazel coverage` runs this; plain `bazel test` never does.
echo "painless_tf's offline Bazel set-up has no coverage tools, so" \
  "'bazel coverage' is not supported. Use 'bazel test' instead." >&2
exit 1
