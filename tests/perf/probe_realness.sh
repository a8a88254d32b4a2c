#!/usr/bin/env bash
# The critic's realness as a term of a fifth anchored fine-tune (tests/perf/RESULTS.md, "The critic's
# realness as a term of the prior's fine-tune"). Each arm starts from the shipped prior with
# prior_anchor4's settings, decodes its samples with the shipped decoder (what the critic was trained
# on), is exported with that decoder and judged at T = 1.1. Weight 0 is the control. Needs
# data/synth10k and runs/attributes (README). The critic (CRITIC) is v2.8's critic A by default
# (training/checkpoints/critic_v28), frozen, or learning on at CRITIC_LR (realness_critic_lr).
#   bash tests/perf/probe_realness.sh [WEIGHT ...]     (default: 0 1 3; ≈ 13 min an arm here)
#   SEED=1 bash tests/perf/probe_realness.sh 1 0      the same arms with another seed (runs/prior_realW_s1)
#   CRITIC_LR=1e-4 bash tests/perf/probe_realness.sh 1  the critic learning on (runs/prior_real1_lr1e-4)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
CRITIC=${CRITIC:-training/checkpoints/critic_v28/critic_a}
CRITIC_LR=${CRITIC_LR:-0}
SEED=${SEED:-0}
suffix=$([ "$SEED" = 0 ] || echo "_s$SEED")$([ "$CRITIC_LR" = 0 ] || echo "_lr$CRITIC_LR")
for w in "${@:-0 1 3}"; do
  for W in $w; do
    run="prior_real$W$suffix"
    facegen-train generator --data data/synth10k --autoencoder training/checkpoints/generator_v2/decoder \
      --attributes-run runs/attributes --set anchor_from=training/checkpoints/generator_v2/prior_elbo_xxlong \
      --set condition_batch=8 --set kl_warmup_fraction=0 --set anchor_weight=1 --set lr=0.0005 \
      --set warmup_steps=20 --set steps=600 --set snapshot_every=200 \
      --set init_from=training/checkpoints/generator_v2/prior_anchored --set 'condition_names=["eyes","mouth"]' \
      --set condition_weight=6 --set condition_temperature=1.0 --set "realness_from=$CRITIC" \
      --set "realness_weight=$W" --set "realness_critic_lr=$CRITIC_LR" --set "seed=$SEED" --out "runs/$run"
    bash tests/perf/judge_prior.sh "$run"
  done
done
