#!/usr/bin/env bash
# Growing the trained ELBO prior by one finest-scale group against training it on, at equal CPU time
# (tests/perf/RESULTS.md, "A deeper prior grown from the trained one"). Each arm starts from the
# committed 43 000-step ELBO prior with the recipe's continuation settings, is exported with the
# shipped decoder and judged un-anchored at T = 1.1. Needs data/synth10k and runs/attributes (README).
#   bash tests/perf/probe_prior_growth.sh [ARM ...]     arms: base grown warm (all three: ≈ 1 h 45 min here)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
GROWN='model.scales=[[4,3,96],[8,3,96],[16,3,96]]'
for arm in "${@:-base grown warm}"; do
  for a in $arm; do
    case $a in
      base) extra=(--set steps=3900 --set kl_warmup_fraction=0) ;;  # 3900 plain steps ≈ 3000 grown ones
      grown) extra=(--set steps=3000 --set kl_warmup_fraction=0 --set "$GROWN") ;;
      warm) extra=(--set steps=3000 --set kl_warmup_fraction=0.3 --set "$GROWN") ;;  # NVAE's KL warm-up and balancing
      *) echo "unknown arm $a (base, grown, warm)" >&2; exit 2 ;;
    esac
    facegen-train generator --data data/synth10k --autoencoder training/checkpoints/generator_v2/autoencoder \
      --attributes-run runs/attributes --set init_from=training/checkpoints/generator_v2/prior_elbo_xxlong \
      --set lr=0.001 --set warmup_steps=100 --set snapshot_every=1000 "${extra[@]}" --out "runs/probe_$a"
    bash tests/perf/judge_prior.sh "probe_$a"
  done
done
