#!/usr/bin/env bash
# Takes a PNG screenshot of a painless_tf report.html with headless Chromium,
# to check that the page renders without opening a browser window.
#
#   bench/screenshot_report.sh <model_dir>/report.html report.png [WIDTHxHEIGHT]
#
# Needs Debian's `chromium` (apt-get install -y chromium). The browser gets a
# fresh profile in a temporary folder and no network features, so it never
# reaches out; the report itself is self-contained (plots are data: URIs).
# Prints one JSON line: {"report": ..., "screenshot": ..., "bytes": N}.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT (default 1200x3000)]" >&2
  exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1200x3000}
if [[ ! -f "$report" ]]; then
  echo "$1: no such report. Write one with" \
    "painless_tf.report.write_report(model_dir)." >&2
  exit 2
fi
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
  echo "chromium is not installed. Run: apt-get install -y chromium" >&2
  exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Chromium logs harmless D-Bus and GPU warnings on stderr; keep them out of
# the way unless it fails.
if ! "$browser" --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$out" \
    --window-size="${size/x/,}" "file://$report" >"$profile/log" 2>&1; then
  cat "$profile/log" >&2
  exit 1
fi
if [[ ! -s "$out" ]]; then
  cat "$profile/log" >&2
  echo "chromium wrote no screenshot to $out" >&2
  exit 1
fi
printf '{"report": "%s", "screenshot": "%s", "bytes": %d}\n' \
  "$report" "$out" "$(stat -c %s "$out")"
