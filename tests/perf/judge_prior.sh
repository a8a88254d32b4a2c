#!/usr/bin/env bash
# Judge a stage-2 run folder runs/NAME as the probes do: exported with the shipped decoder unchanged
# (runs/NAME_dec/export), the benchmark at T = 1.1 on 1000 faces (runs/bench/NAME.json), then its
# held-out ELBO. Called by the probe scripts after `source deploy/env.sh`.
#   bash tests/perf/judge_prior.sh NAME
set -euo pipefail
name=$1
[ -f exports/judge/1/model.onnx ] && [ -f data/bench/labels.csv ] || bash tests/perf/make_bench_data.sh
mkdir -p runs/bench
facegen-train decoder --data data/synth10k --autoencoder training/checkpoints/generator_v2/decoder \
  --prior "runs/$name" --out "runs/${name}_dec" --set steps=0 --export "runs/${name}_dec/export"
facegen-train evaluate-generator --export "runs/${name}_dec/export" --n 1000 --temperature 1.1 \
  --out "runs/bench/$name.json"
python -c "import json; print('$name held-out nats/dim', json.load(open('runs/$name/metrics.json'))['held_out'])"
