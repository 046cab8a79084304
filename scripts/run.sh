#!/usr/bin/env bash
# The main job: set up (venv, pinned packages, chromium for PNGs), then execute every notebook in
# notebooks/ through papermill on the embedded default dataset (parameter set "smoke").
# Executed notebooks -> outputs/smoke/notebooks/, figures -> figures/, results -> figures/results/smoke.{json,md}.
# Pass another set and options through, e.g.:  bash scripts/run.sh --set beauty --data ../shared/data/amazon-beauty
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ $# -gt 0 ] || set -- --set smoke
exec .venv/bin/python -m qbert4rec_lib reproduce "$@"
