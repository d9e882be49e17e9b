#!/usr/bin/env bash
# The README's test command: installs what is missing (idempotent), then runs the linter (ruff), the
# unit tests and the smoke-scale reproductions. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
# one cache per test run: tests make their own small demos/checkpoints (see tests/conftest.py)
export RELAM_TEST_CACHE=${RELAM_TEST_CACHE:-$(mktemp -d /tmp/relam-test-XXXXXX)}
status=0
# the linter (ruff, configured in pyproject.toml); a lint error fails the run after the tests
echo "[test] ruff check ."
.venv/bin/ruff check . || status=$?
.venv/bin/python -m pytest tests/ -n 2 -q -p no:cacheprovider "$@" || status=$?
if [ -d reproductions ] && ls reproductions/test_*.py >/dev/null 2>&1; then
  # the smoke reproductions run every cell of every spec into the same throw-away cache
  RELAM_CACHE=$RELAM_TEST_CACHE RELAM_SCALE=smoke .venv/bin/python -m pytest reproductions/ -n 2 -q \
    -p no:cacheprovider || status=$?
fi
exit $status
