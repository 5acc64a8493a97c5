#!/usr/bin/env bash
# Regenerate this sample report: MSRS eval split (38 pairs, ../shared/datasets/msrs) -> bag -> eval-bag,
# plus the table against published methods' outputs on the 22 pairs they cover.
# Run from the repository root:  bash docs/sample_report/regenerate.sh
set -euo pipefail
SHARED=${SHARED:-../shared}
WORK=out/sample_report_work
DEST=docs/sample_report
rm -rf "$WORK"
mkdir -p "$WORK"
# The released checkpoint, exported once (BN folded, dynamic size).
sage-ros export --weights "$SHARED/sage_official/checkpoints.pt" --out "$WORK/sage_student.onnx"
sage-ros make-bag "$SHARED/datasets/msrs" --split eval --out "$WORK/msrs_eval_bag" \
    --rate 10 --jitter-ms 5 --thermal-offset-ms 15
rm -f "$DEST"/*.png "$DEST"/report.json "$DEST"/report.md "$DEST"/peers.md "$DEST"/peers.json
# The output bag (~100 MB) stays in $WORK: only the report and plots are committed.
sage-ros eval-bag "$WORK/msrs_eval_bag" --out "$DEST" --model "$WORK/sage_student.onnx" \
    --backend onnxruntime --threads 1 --no-output-bag || test $? -eq 1
python benchmarks/compare_methods.py --ir "$SHARED/datasets/msrs/ir" --vis "$SHARED/datasets/msrs/vi" \
    --model "$WORK/sage_student.onnx" --method "SeAFusion=$SHARED/datasets/msrs/peers/SeAFusion" \
    --method "LSAFusion=$SHARED/datasets/msrs/peers/LSAFusion" --out "$DEST/peers.md"
