#!/usr/bin/env bash
# Short, prepared training check on real pairs: a few hundred bi-level steps, then export and fuse.
#
#   scripts/train_check.sh                      # CUDA if present: 200 steps, 192x256 crops, batch 4
#   scripts/train_check.sh --device cpu --steps 5 --crop 64,96 --batch 2 --threads 1  # CPU rehearsal
#
# Run from the repository root with ../shared beside it (MSRS subset, SAGE sample pairs). No SAM
# checkpoint is needed or downloaded: a tiny *random* SAM stands in (L_cs runs, but carries no
# semantics), its mask generator is exercised on two sample pairs, and training uses whole-image
# masks on the 77 MSRS train pairs (which have no pixel labels, so the segmentation term is 0).
# Prints step time and losses; everything goes to out/train_check/ (removed first).
set -euo pipefail

DEVICE=auto
STEPS=200
CROP=192,256
BATCH=4
WORKERS=4
THREADS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --crop) CROP="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --threads) THREADS=(--set "train.threads=$2"); shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SHARED=../shared
OUT=out/train_check
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

for need in "$SHARED/datasets/msrs/ir" "$SHARED/sage_official/Ir"; do
  [[ -d "$need" ]] || { echo "train_check: $need not found (../shared must sit beside the repository)" >&2; exit 2; }
done
"$PY" - <<'PYEOF' || { echo "train_check: install the training extra first: pip install -e '.[training]'" >&2; exit 2; }
import cv2, onnxruntime, segment_anything, torch, yaml  # noqa: F401
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
PYEOF

rm -rf "$OUT"
mkdir -p "$OUT"
T0=$(date +%s)

echo "== 1/4 tiny random SAM (stand-in for the official ViT-B checkpoint)"
"$PY" -m sage_ros train student tiny-sam "$OUT/tiny_sam.pt" --img-size 64

echo "== 2/4 mask cache with the tiny SAM on 2 SAGE sample pairs (checks the generator path)"
MASK_DEVICE=$DEVICE
[[ "$MASK_DEVICE" == auto ]] && MASK_DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
"$PY" -m sage_ros train student masks --config config/train_smoke.yaml --device "$MASK_DEVICE" --no-progress \
  --set data.layout=sage --set "data.root=$SHARED/sage_official" --set data.limit=2 \
  --set "data.mask_cache=$OUT/masks" --set "sam.checkpoint=$OUT/tiny_sam.pt" \
  --set sam.points_per_side=8 --set sam.pred_iou_thresh=0.0 --set sam.stability_score_thresh=0.0 \
  --set sam.crop_n_layers=0
ls "$OUT/masks/ir" "$OUT/masks/vis"

echo "== 3/4 bi-level training: $STEPS steps, crops $CROP, batch $BATCH, device $DEVICE"
LOG_EVERY=$(( STEPS >= 100 ? 20 : 1 ))
"$PY" -m sage_ros train student fit --config config/train_smoke.yaml --steps "$STEPS" --device "$DEVICE" \
  --out "$OUT/run" --set "sam.checkpoint=$OUT/tiny_sam.pt" --set "data.crop=[$CROP]" \
  --set "train.batch_size=$BATCH" --set "data.workers=$WORKERS" --set "train.log_every=$LOG_EVERY" \
  --set "train.checkpoint_every=$(( STEPS / 2 > 0 ? STEPS / 2 : 1 ))" ${THREADS[@]+"${THREADS[@]}"}

echo "== 4/4 summary, and the exported student fusing a real pair with onnxruntime"
"$PY" - "$OUT/run" "$SHARED" <<'PYEOF'
import csv, sys
from pathlib import Path

import cv2
import numpy as np

from sage_ros.pipeline import PipelineSettings, build_pipeline

run, shared = Path(sys.argv[1]), Path(sys.argv[2])
rows = list(csv.DictReader((run / "metrics.csv").open()))
ms = np.array([float(r["step_ms"]) for r in rows])
warm = ms[5:] if len(ms) > 10 else ms
print(f"steps: {len(rows)}   step time: median {np.median(warm):.1f} ms, mean {warm.mean():.1f} ms "
      f"(first step {ms[0]:.0f} ms)")
for key in ("student_loss", "s_mse", "s_grad", "s_cs", "s_fea", "teacher_loss", "t_int", "t_grad", "t_fea"):
    # Alternating updates: a student column is empty on the teacher's steps and vice versa.
    vals = [float(r[key]) for r in rows if r.get(key)]
    k = max(1, min(10, len(vals) // 4))
    print(f"  {key:13s} first {vals[0]:9.4f}  last {vals[-1]:9.4f}   "
          f"mean of first {k}: {np.mean(vals[:k]):9.4f}  mean of last {k}: {np.mean(vals[-k:]):9.4f}")
first_ir = sorted((shared / "datasets/msrs/ir").glob("*.png"))[0]
ir = cv2.imread(str(first_ir), cv2.IMREAD_GRAYSCALE)
vis = cv2.imread(str(shared / "datasets/msrs/vi" / first_ir.name), cv2.IMREAD_COLOR)
pipeline = build_pipeline(PipelineSettings(model=str(run / "student.onnx"), backend="onnxruntime", segmentation=False))
result = pipeline.fuse(ir, vis)
cv2.imwrite(str(run / "fused_example.png"), cv2.cvtColor(result.fused_rgb, cv2.COLOR_RGB2BGR))
print(f"exported student: {run / 'student.onnx'} fused {ir.shape[1]}x{ir.shape[0]} in {result.inference_ms:.1f} ms "
      f"(onnxruntime CPU); mean fused Y {result.fused_y.mean():.3f}")
PYEOF
echo "train_check: done in $(( $(date +%s) - T0 )) s"
