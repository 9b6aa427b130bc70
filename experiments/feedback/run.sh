#!/usr/bin/env bash
# Discriminator-feedback fine-tuning on the offline digits, CPU (experiments/feedback/README.md).
# Usage: bash experiments/feedback/run.sh <DDPM run folder> [out folder] [method ...]
set -euo pipefail
DDPM=${1:?give the DDPM run folder}
OUT=${2:-runs/feedback}
shift 2 || true
METHODS=${*:-noise_time}
PY=${PY:-python}
STEPS=${STEPS:-20}
N=${N:-500}
# the base DDPM's architecture (experiments/discriminator_guidance/README.md trains it)
ARCH="model.unet.channels=16 model.unet.channel_mult=[1,2,2]"
TRAIN="experiment=digits_budget model=ddpm_feedback $ARCH model.pretrained=$DDPM +model.pretrained_use_ema=false
       max_kimg=9 metrics=none logger=csv trainer.enable_progress_bar=false callbacks.samples.every_n_batches=70"
EVAL="n=$N metrics=[fid,kid,is] feature_space=domain use_ema=false
      +sample_options.sampler=ddim +sample_options.sampling_steps=$STEPS"
for m in $METHODS; do  # 1 warm-up epoch (D only) + 1 joint epoch = 9 kimg
  $PY -m difgan.run $TRAIN model.feedback.method=$m hydra.run.dir=$OUT/$m
  $PY -m difgan.evaluate ckpt_path=$OUT/$m $EVAL out=$OUT/$m.json
done
# control: the same 9 kimg of plain DDPM training at the fine-tuning lr (adv_weight 0)
$PY -m difgan.run $TRAIN model.feedback.adv_weight=0 hydra.run.dir=$OUT/control_mse_only
$PY -m difgan.evaluate ckpt_path=$OUT/control_mse_only $EVAL out=$OUT/control_mse_only.json
