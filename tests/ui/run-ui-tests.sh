#!/usr/bin/env bash
# Browser tests of the dashboard (/ui/): Debian's chromium driven by
# Playwright (PyPI, in a virtual environment under target/ui-venv) against a
# real daemon with real agents. Needs root (cgroups) and chromium; without
# them the tests skip with the reason, except in CI or with
# ALLOT_REQUIRE_CGROUPS=1, where that is a failure. Screenshots of the three
# pages go to $ALLOT_UI_SCREENSHOTS (default target/ui-screenshots).
set -euo pipefail
cd "$(dirname "$0")/../.."
strict() { [ -n "${CI:-}" ] || [ "${ALLOT_REQUIRE_CGROUPS:-}" = 1 ]; }
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  if strict; then echo "browser tests: chromium is missing (apt-get install chromium)" >&2; exit 1; fi
  echo "SKIP browser tests: no chromium on this machine (apt-get install chromium)"
  exit 0
fi
echo "== browser tests of the dashboard ($("$CHROMIUM" --version 2>/dev/null | head -1))"
cargo build -q -p allot
VENV=target/ui-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "playwright==1.65.2" "pytest>=8"
export ALLOT_BIN="$PWD/target/debug/allot" CHROMIUM
export ALLOT_UI_SCREENSHOTS="${ALLOT_UI_SCREENSHOTS:-$PWD/target/ui-screenshots}"
"$VENV/bin/python" -m pytest -q -s tests/ui "$@"
echo "screenshots: $ALLOT_UI_SCREENSHOTS"
