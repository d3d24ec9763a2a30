#!/usr/bin/env bash
# The Python client's tests: a virtual environment under target/py-venv, the
# package installed into it from this checkout (with its test and langchain
# extras), a type check, then pytest against real daemons (the debug build of
# allot, built here if needed). Needs Python 3.9+ with venv and pip, and
# access to the Python package index (or a pip configured to a mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${ALLOT_PY_VENV:-target/py-venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
echo "== installing clients/python[test,langchain] into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "./clients/python[test,langchain]"
echo "== building the daemon the tests start"
cargo build -q -p allot
echo "== type check (mypy --strict)"
(cd clients/python && "../../$VENV/bin/python" -m mypy --strict src)
echo "== pytest (clients/python/tests)"
ALLOT_BIN="$PWD/target/debug/allot" "$VENV/bin/python" -m pytest clients/python/tests -v -p no:cacheprovider "$@"
