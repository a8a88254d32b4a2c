#!/usr/bin/env bash
# The generator benchmark's data and its independent judge, from nothing but the repository:
#   data/bench  — real faces the generator never saw (procedural set, seed 101): real sets A and B
#   data/judge  — another procedural set (seed 202) whose ground truth trains the judge
#   exports/judge/1 — the independent attribute judge: another set, another seed, other widths;
#                     it took no part in training the generator (not served; the benchmark's only)
# Usage: bash tests/perf/make_bench_data.sh [STEPS]   (≈ 1 min of rendering + ≈ 5 min of the judge's training)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh
steps="${1:-1500}"
[ -f data/bench/labels.csv ] || facegen-train synth --out data/bench --n 5000 --seed 101
[ -f data/judge/labels.csv ] || facegen-train synth --out data/judge --n 5000 --seed 202
if [ -f exports/judge/1/model.onnx ] && [ -z "${FORCE:-}" ]; then
  echo "exports/judge/1 exists (FORCE=1 retrains it)"; exit 0
fi
# the judge learns every female face of data/judge from its ground truth
(echo file,eyes,mouth,hair_color,background,head; awk -F, 'NR>1 && $7==1' data/judge/labels.csv | cut -d, -f1-6) \
  > data/judge/judge_labels.csv
facegen-train attributes --data data/judge --hand-labels data/judge/judge_labels.csv --set seed=3 \
  --set steps="$steps" --set 'model.widths=[32,80,144]' --set model.stem=16 --set eval_outside=0 \
  --out runs/judge --export exports/judge/1
