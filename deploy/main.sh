#!/usr/bin/env bash
# The main job of the README, on the embedded default models (exports/).
# Until every service and the pipeline exist (see the issues), it: renders a procedural face set,
# starts the filter, attribute and sampler services (HTTP + gRPC each), filters the set through
# the filter over gRPC with the client CLI, classifies and measures one image over HTTP, generates
# 16 faces for requested conditions into runs/main/generated.png, then stops the services (also
# on Ctrl-C).
# Environment: FACEGEN_N (images, default 2000), FACEGEN_OUT (default runs/main), ports
# FACEGEN_FILTER_HTTP_PORT / FACEGEN_FILTER_GRPC_PORT (3001 / 50051) and
# FACEGEN_ATTRIBUTES_HTTP_PORT / FACEGEN_ATTRIBUTES_GRPC_PORT (3002 / 50052),
# FACEGEN_SAMPLER_HTTP_PORT / FACEGEN_SAMPLER_GRPC_PORT (3003 / 50053).
source "$(dirname "$0")/env.sh"
out="$(mkdir -p "${FACEGEN_OUT:-runs/main}" && cd "${FACEGEN_OUT:-runs/main}" && pwd)"
n="${FACEGEN_N:-2000}"
filter_http="${FACEGEN_FILTER_HTTP_PORT:-3001}"
attributes_http="${FACEGEN_ATTRIBUTES_HTTP_PORT:-3002}"
sampler_http="${FACEGEN_SAMPLER_HTTP_PORT:-3003}"
export FACEGEN_FILTER_GRPC_PORT="${FACEGEN_FILTER_GRPC_PORT:-50051}"
export FACEGEN_ATTRIBUTES_GRPC_PORT="${FACEGEN_ATTRIBUTES_GRPC_PORT:-50052}"
export FACEGEN_SAMPLER_GRPC_PORT="${FACEGEN_SAMPLER_GRPC_PORT:-50053}"
export FACEGEN_ALLOWED_ROOTS="$out" FACEGEN_JOBS_DIR="$out/jobs" BENTOML_DO_NOT_TRACK=true

[ -f "$out/data/labels.csv" ] || facegen-train synth --out "$out/data" --n "$n" --seed 0
facegen-train samples --out "$out/samples.png"

pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT
serve() {  # serve NAME TARGET HTTP_PORT: each service with its own BENTOML_HOME (separate metrics)
  BENTOML_HOME="$out/bentoml-$1" bentoml serve "$2" --port "$3" >"$out/$1.log" 2>&1 &
  pids+=($!)
}
ready() {  # ready NAME HTTP_PORT
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return 0
    sleep 0.5
  done
  echo "[facegen] $1 did not become ready; its log:"; cat "$out/$1.log"; exit 1
}
serve filter services.filter.service:FilterService "$filter_http"
serve attributes services.attributes.service:AttributeService "$attributes_http"
serve sampler services.sampler.service:SamplerService "$sampler_http"
ready filter "$filter_http"
ready attributes "$attributes_http"
ready sampler "$sampler_http"
echo "[facegen] filter: $(curl -s "http://127.0.0.1:$filter_http/v1/status")"
echo "[facegen] attributes: $(curl -s "http://127.0.0.1:$attributes_http/v1/status")"

facegen filter "$out/data" --grpc "127.0.0.1:$FACEGEN_FILTER_GRPC_PORT" --threshold 0.9 --out "$out/selection.csv"
females=("$out"/data/Female/*.png)
one="${females[0]}"
echo "[facegen] P(female) of $one: $(curl -s -X POST "http://127.0.0.1:$filter_http/v1/classify" --data-binary "@$one")"
echo "[facegen] conditions of $one: $(curl -s -X POST "http://127.0.0.1:$attributes_http/v1/infer" --data-binary "@$one")"
echo "[facegen] its ground truth: $(grep "$(basename "$one")" "$out/data/labels.csv")"
curl -sf -X POST "http://127.0.0.1:$sampler_http/sample" -H 'content-type: application/json' \
  -d '{"conditions": [{"eyes": 0.9, "mouth": 0.2, "hair_color": 0.9, "background": 0.8, "head": 0.5}], "count": 16, "seed": 7}' \
  | python -c '
import base64, io, json, sys
from PIL import Image
faces = [Image.open(io.BytesIO(base64.b64decode(f["png"]))) for f in json.load(sys.stdin)["faces"]]
grid = Image.new("RGB", (8 * 64, 2 * 64))
for i, face in enumerate(faces):
    grid.paste(face, (64 * (i % 8), 64 * (i // 8)))
grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(sys.argv[1])
print(f"[facegen] generated {len(faces)} faces (seeds 7…22) into {sys.argv[1]}")' "$out/generated.png"
echo "[facegen] done: dataset $out/data, selection $out/selection.csv, grids $out/samples.png $out/generated.png"
