#!/usr/bin/env bash
# The main job of the README, on the embedded default models (exports/).
# Until every service exists (see the issues), it: renders a procedural face set, starts the
# filter service (HTTP + gRPC), filters the set through it over gRPC with the client CLI, and
# classifies one image over HTTP; then stops the service (also on Ctrl-C).
# Environment: FACEGEN_N (images, default 2000), FACEGEN_OUT (default runs/main),
# FACEGEN_HTTP_PORT (default 3001), FACEGEN_FILTER_GRPC_PORT (default 50051).
source "$(dirname "$0")/env.sh"
out="$(mkdir -p "${FACEGEN_OUT:-runs/main}" && cd "${FACEGEN_OUT:-runs/main}" && pwd)"
n="${FACEGEN_N:-2000}"
http_port="${FACEGEN_HTTP_PORT:-3001}"
export FACEGEN_FILTER_GRPC_PORT="${FACEGEN_FILTER_GRPC_PORT:-50051}"
export FACEGEN_ALLOWED_ROOTS="$out" FACEGEN_JOBS_DIR="$out/jobs" BENTOML_HOME="$out/bentoml-filter"
export BENTOML_DO_NOT_TRACK=true

[ -f "$out/data/labels.csv" ] || facegen-train synth --out "$out/data" --n "$n" --seed 0
facegen-train samples --out "$out/samples.png"

bentoml serve services.filter.service:FilterService --port "$http_port" >"$out/filter.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$http_port/readyz" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$out/filter.log"; exit 1; }
  sleep 0.5
done
echo "[facegen] filter service: $(curl -s "http://127.0.0.1:$http_port/v1/status")"
facegen filter "$out/data" --grpc "127.0.0.1:$FACEGEN_FILTER_GRPC_PORT" --threshold 0.9 --out "$out/selection.csv"
females=("$out"/data/Female/*.png)
one="${females[0]}"
echo "[facegen] HTTP classify $one: $(curl -s -X POST "http://127.0.0.1:$http_port/classify" -F "images=@$one")"
echo "[facegen] done: dataset $out/data, selection $out/selection.csv, grid $out/samples.png"
