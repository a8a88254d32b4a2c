#!/usr/bin/env bash
# The generator benchmark on the shipped export (the README's table): builds the unseen real set
# and the independent judge once (tests/perf/make_bench_data.sh), then judges 1000 samples at the
# shipped temperature (1.1) and its neighbours, and at 1.1 the retouched and the served faces (best
# of 4, retouched). Report: runs/bench/generator.json; 64 samples: runs/bench/samples.png
#   bash tests/perf/bench_generator_quality.sh [EXPORT] [REFINER]      (7.5 min here in session 25)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh
[ -f exports/judge/1/model.onnx ] && [ -f data/bench/labels.csv ] || bash tests/perf/make_bench_data.sh
mkdir -p runs/bench
facegen-train evaluate-generator --export "${1:-exports/generator/1}" --data data/bench --judge exports/judge/1 \
  --n 1000 --temperature 1.1 --temperature 0.8 --temperature 1.0 --temperature 1.2 \
  --retouch "${2:-exports/refiner/1}" --oversample 4 \
  --out runs/bench/generator.json --samples runs/bench/samples.png
