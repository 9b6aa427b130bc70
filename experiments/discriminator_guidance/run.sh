#!/usr/bin/env bash
# Discriminator guidance on the offline digits, CPU (experiments/discriminator_guidance/README.md).
# Usage: bash experiments/discriminator_guidance/run.sh <DDPM run folder> [out folder]
set -euo pipefail
DDPM=${1:?give the DDPM run folder}
OUT=${2:-runs/dg}
PY=${PY:-python}
EMA=${EMA:-false}     # the base DDPM's EMA (half-life 5 kimg) lags a 12-kimg run: sample with raw weights
STEPS=${STEPS:-20}
N=${N:-500}
COMMON="discriminator.diffusion_ckpt=$DDPM discriminator.use_ema=$EMA discriminator.n_fake=1000
        discriminator.sample_options.sampler=ddim discriminator.sample_options.sampling_steps=$STEPS
        discriminator.epochs=10 discriminator.batch_size=128 metrics=none logger=csv
        trainer.enable_progress_bar=false"
# two discriminators on the same fakes: different seeds and t sampling (the ensemble)
$PY -m difgan.run task=train_discriminator $COMMON discriminator.t_sampling=importance seed=0 \
    hydra.run.dir=$OUT/d1
$PY -m difgan.run task=train_discriminator $COMMON discriminator.t_sampling=uniform seed=1 \
    discriminator.samples=$OUT/d1/fakes.npz hydra.run.dir=$OUT/d2
EVAL="ckpt_path=$DDPM n=$N metrics=[fid,kid,is] feature_space=domain use_ema=$EMA
      +sample_options.sampler=ddim +sample_options.sampling_steps=$STEPS"
$PY -m difgan.evaluate $EVAL out=$OUT/none.json
for w in 1 2 4; do
  $PY -m difgan.evaluate $EVAL guidance.discriminator=$OUT/d1 guidance.weight=$w out=$OUT/d1_w$w.json
done
for w in 1 2; do
  $PY -m difgan.evaluate $EVAL "guidance.discriminator=[$OUT/d1,$OUT/d2]" guidance.weight=$w out=$OUT/ens_w$w.json
done
