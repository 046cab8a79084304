#!/usr/bin/env bash
# Set up, then run the whole test suite: library tests + every notebook executed with the smoke parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest tests -p no:cacheprovider "$@"
