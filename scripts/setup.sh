#!/usr/bin/env bash
# Set up the kit on a fresh machine: a virtual environment in .venv with the pinned requirements,
# and (where we are root with apt) Debian's chromium so plotly/kaleido can write PNG figures.
# Idempotent: re-running reuses .venv while requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing requirements.txt into .venv (first time: ~3-4 minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, open_clip, transformers, umap, papermill, plotly" \
    || { echo "[setup] ERROR: the virtual environment does not import; see pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
else
  echo "[setup] .venv is up to date with requirements.txt"
fi

# PNG export needs a Chrome/Chromium binary that kaleido cannot download offline.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && [ "${QBERT4REC_NO_APT:-0}" != "1" ]; then
    echo "[setup] installing Debian's chromium for PNG figure export"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/tmp/qbert4rec-apt.log 2>&1 \
      && echo "[setup] chromium installed" \
      || echo "[setup] note: could not install chromium (see /tmp/qbert4rec-apt.log); figures will be HTML only, PNGs skipped"
  else
    echo "[setup] note: no chromium found and cannot apt-get it; figures will be HTML only, PNGs skipped"
  fi
fi

# Install the kit itself (pyproject.toml), editable: `import qbert4rec_lib` works from anywhere in this venv
# (notebooks run with cwd=notebooks/) and .venv/bin/qbert4rec is the CLI. Offline: no dependencies (they are
# requirements.txt's) and no build isolation (setuptools is already in the venv; torch requires it).
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$site/qbert4rec_kit.pth"  # the .pth file earlier versions of this script wrote
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-build-isolation -e . \
  || { echo "[setup] ERROR: could not install the kit into .venv (pip install -e .)" >&2; exit 1; }
# The `python3` kernel papermill and nbval start must be this venv's interpreter.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qbert4rec kit)" >/dev/null
echo "[setup] ready: .venv ($(.venv/bin/python --version 2>&1))"
