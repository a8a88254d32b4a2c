#!/usr/bin/env bash
# The main job of the README: install, start the five services (filter, attributes, sampler,
# critic, pipeline) on the shipped models under supervisord (deploy/Procfile, deploy/supervise.py:
# a service that dies is restarted while the others keep serving), then
#   - generate 16 faces for requested conditions through the pipeline over gRPC (faces.png),
#   - filter a small procedural dataset through the filter service over gRPC (selection.csv),
#   - show the HTTP API with curl,
# and keep serving until Ctrl-C, which stops every service. `bash deploy/main.sh --once` stops
# after the demo instead. Environment: FACEGEN_OUT (default runs/main), FACEGEN_N (images in the
# demo dataset, default 500), the ports of deploy/ports.env.
set -euo pipefail
cd "$(dirname "$0")/.."
once=0; [ "${1:-}" = "--once" ] && once=1
set --  # env.sh reads its own arguments (the extras to install)
source deploy/env.sh
# a shell that sourced an older env.sh may still carry the training allocator policy: a service
# under it keeps the peak memory of its largest request for ever (tests/perf/service_memory.py)
unset MALLOC_MMAP_MAX_ MALLOC_TRIM_THRESHOLD_
out="$(mkdir -p "${FACEGEN_OUT:-runs/main}" && cd "${FACEGEN_OUT:-runs/main}" && pwd)"
# the demo's filter job starts afresh each run (seconds): a job folder an older facegen wrote is
# refused by the service, rightly, and must not stop the demo
rm -rf "$out/jobs"
set -a
# shellcheck disable=SC1091
source <(grep -v '^#' deploy/ports.env | sed 's/^\([A-Z_]*\)=\(.*\)$/\1=${\1:-\2}/')
FACEGEN_STATE="$out" FACEGEN_ALLOWED_ROOTS="$out" FACEGEN_JOBS_DIR="$out/jobs" BENTOML_DO_NOT_TRACK=true
FACEGEN_GRPC_HOST=127.0.0.1
FACEGEN_PIPELINE_FILTER="127.0.0.1:$FACEGEN_FILTER_GRPC_PORT"
FACEGEN_PIPELINE_ATTRIBUTES="127.0.0.1:$FACEGEN_ATTRIBUTES_GRPC_PORT"
FACEGEN_PIPELINE_SAMPLER="127.0.0.1:$FACEGEN_SAMPLER_GRPC_PORT"
FACEGEN_PIPELINE_CRITIC="127.0.0.1:$FACEGEN_CRITIC_GRPC_PORT"
set +a

conf="$(python deploy/supervise.py --out "$out")"
supervisord -c "$conf" >"$out/logs/supervisord.out" 2>&1 &
supervisor_pid=$!
stop() { kill -TERM "$supervisor_pid" 2>/dev/null || true; wait "$supervisor_pid" 2>/dev/null || true; echo "[facegen] services stopped"; }
trap stop EXIT
trap 'exit 130' INT TERM
for svc in pipeline filter attributes sampler critic; do
  var="FACEGEN_${svc^^}_HTTP_PORT"
  log="$out/logs/$svc.log"
  for _ in $(seq 1 240); do
    curl -sf -m 2 "http://127.0.0.1:${!var}/readyz" >/dev/null && break
    kill -0 "$supervisor_pid" 2>/dev/null || { echo "[facegen] supervisord exited:"; tail -20 "$out/logs/supervisord.out"; exit 1; }
    sleep 0.5
  done
  if ! curl -sf -m 2 "http://127.0.0.1:${!var}/readyz" >/dev/null; then
    echo "[facegen] $svc not ready: $(curl -s -m 2 "http://127.0.0.1:${!var}/readyz" || echo 'no answer'); log:"
    tail -50 "$log" 2>/dev/null; exit 1
  fi
  echo "[facegen] $svc ready on http://127.0.0.1:${!var} (gRPC $(v="FACEGEN_${svc^^}_GRPC_PORT"; echo "${!v}"))"
done

facegen generate --n 16 --eyes 0.9 --mouth 0.2 --hair-color 0.8 --background 0.7 --head 0.5 --seed 7 \
  --grpc "127.0.0.1:$FACEGEN_PIPELINE_GRPC_PORT" --out "$out/faces.png"
[ -f "$out/data/labels.csv" ] || facegen-train synth --out "$out/data" --n "${FACEGEN_N:-500}" --seed 0 --hand-labels 100
facegen filter "$out/data" --grpc "127.0.0.1:$FACEGEN_FILTER_GRPC_PORT" --out "$out/selection.csv"
echo "[facegen] HTTP: curl -X POST http://127.0.0.1:$FACEGEN_PIPELINE_HTTP_PORT/generate -H 'content-type: application/json' -d '{\"count\": 1, \"seed\": 1}'"
curl -sf -X POST "http://127.0.0.1:$FACEGEN_PIPELINE_HTTP_PORT/generate" -H 'content-type: application/json' \
  -d '{"count": 1, "seed": 1, "conditions": {"eyes": 0.9}}' \
  | python -c 'import json, sys; f = json.load(sys.stdin)["faces"][0]; f.pop("png"); print("[facegen]", json.dumps(f))'
echo "[facegen] done: $out/faces.png, $out/selection.csv; metrics at http://127.0.0.1:$FACEGEN_PIPELINE_HTTP_PORT/metrics"
if [ "$once" = 0 ]; then
  echo "[facegen] serving: the playground is at http://127.0.0.1:$FACEGEN_PIPELINE_HTTP_PORT/ (a service that dies is restarted; \`supervisorctl -c $conf status\`); Ctrl-C stops every service"
  wait "$supervisor_pid"
fi
