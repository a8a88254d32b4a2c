#!/usr/bin/env bash
# The generator benchmark on the shipped export (the README's table): builds the unseen real set
# and the independent judge once (tests/perf/make_bench_data.sh), then judges 1000 samples at the
# shipped temperature and its neighbours. Report: runs/bench/generator.json; 64 samples: runs/bench/samples.png
#   bash tests/perf/bench_generator_quality.sh [EXPORT]      (≈ 4 min here)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh
[ -f exports/judge/1/model.onnx ] && [ -f data/bench/labels.csv ] || bash tests/perf/make_bench_data.sh
mkdir -p runs/bench
facegen-train evaluate-generator --export "${1:-exports/generator/1}" --data data/bench --judge exports/judge/1 \
  --n 1000 --temperature 0.8 --temperature 0.6 --temperature 1.0 \
  --out runs/bench/generator.json --samples runs/bench/samples.png
