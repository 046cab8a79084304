#!/usr/bin/env bash
# GPU check (issue 16): SASRec-CE and Q-Bert4Rec on Amazon Beauty with device=cuda, each to early stopping, printing
# every epoch's time and the test NDCG@10. Meant for a machine with one CUDA GPU; about 10 minutes at most.
#
#   bash scripts/gpu_check.sh [DATA]            # DATA default: ../shared/data/amazon-beauty
#
# Written without a GPU at hand (the reference machine has none): it fails fast, before any work, when torch sees
# no CUDA device. Stages 0-2 of Q-Bert4Rec: the text encoder runs on the GPU (features.device=cuda); fusion and the
# RQ-VAE take their device from run_fusion/run_quantize's defaults (CPU). Each training phase also has a wall-time
# cap (time_limit_s) so that the whole check fits in ~10 minutes: a phase that hits it reports stop reason
# "time_limit" instead of "patience" in the printed training lines. Cache: a fresh folder under outputs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DATA=${1:-../shared/data/amazon-beauty}
[ -f "$DATA/user_sequence.txt" ] || { echo "error: Beauty data not found at $DATA (pass the folder)" >&2; exit 2; }
"$PY" - <<'PYEOF' || { echo "error: no usable CUDA device for $PY (torch missing, or torch.cuda.is_available() is False); this check needs a GPU" >&2; exit 3; }
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device 0: {torch.cuda.get_device_name(0)}", flush=True)
PYEOF
export QBERT4REC_CACHE=${QBERT4REC_CACHE:-outputs/gpu_check_cache}
CUDA_SETS=(--set baseline_train.device=cuda --set pretrain.device=cuda --set finetune.device=cuda
           --set features.device=cuda)
start=$(date +%s)
echo "== SASRec-CE (beauty preset: dropout 0.5, patience 10; capped at 180 s of training) =="
timeout 300 "$PY" -m qbert4rec_lib experiment "$DATA" --config beauty --models SASRec-CE --seeds 0 --threads 4 \
  "${CUDA_SETS[@]}" --set baseline_train.time_limit_s=180
echo "== Q-Bert4Rec (stages 0-2, pretraining capped at 200 s, fine-tuning at 60 s) =="
timeout 420 "$PY" -m qbert4rec_lib experiment "$DATA" --config beauty --models Q-Bert4Rec --seeds 0 --threads 4 \
  "${CUDA_SETS[@]}" --set pretrain.time_limit_s=200 --set finetune.time_limit_s=60
echo "gpu_check: done in $(( $(date +%s) - start )) s"
