#!/usr/bin/env bash
# Set up, then run the whole test suite: library tests + every notebook executed with the smoke parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Test files run on 2 worker processes (pytest-xdist; one file stays on one worker, so the notebooks run in order in
# one shared output folder). QBERT4REC_TEST_WORKERS=0 runs everything in this process.
# Arguments go to pytest. Naming test files or node ids (tests/test_cli.py, tests/test_cli.py::test_x) runs just
# those; with none, the whole `tests` folder runs.
workers="${QBERT4REC_TEST_WORKERS:-2}"
targets=(tests)
for arg in "$@"; do
  if [ "${arg#-}" = "$arg" ] && [ -e "${arg%%::*}" ]; then targets=(); fi
done
if [ "$workers" = "0" ]; then
  exec .venv/bin/python -m pytest "${targets[@]}" -p no:cacheprovider "$@"
fi
exec .venv/bin/python -m pytest "${targets[@]}" -p no:cacheprovider -n "$workers" --dist loadfile "$@"
