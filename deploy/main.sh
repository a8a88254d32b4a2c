#!/usr/bin/env bash
# The main job of the README. Until the services exist (see the issues), it runs the data and
# training smoke path on this machine: render a procedural face set, check its layout, draw the
# sample grid, and train/select with the filter model where it exists.
# Environment: FACEGEN_N (images, default 2000), FACEGEN_OUT (default runs/main).
source "$(dirname "$0")/env.sh"
out="${FACEGEN_OUT:-runs/main}"
n="${FACEGEN_N:-2000}"
mkdir -p "$out"
facegen-train synth --out "$out/data" --n "$n" --seed 0
facegen-train inspect "$out/data"
facegen-train samples --out "$out/samples.png"
echo "[facegen] done: dataset in $out/data, grid in $out/samples.png"
