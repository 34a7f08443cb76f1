#!/usr/bin/env bash
# The main GPU figures in one device call (about 9 minutes on an H100/H200; the image needs torch, lightning, timm,
# safetensors): DiT-DH-XL training (eager fp32/TF32 baseline, eager bf16, compiled bf16, train_dit's own Lightning
# loop), 50-point Euler + CFG sampling eager and compiled, then the latent data path and caching, the feed margin
# taken against the compiled XL step just measured, then RAEv2's released DiT on cached latents against encoding
# DINOv3-L K=7 online (about 2 more minutes). JSON results go to $OUT (the device tool's folder) or bench/results/.
# DEVICE, DIT_ARGS, DATA_ARGS and RAEV2_ARGS (appended, so they override) let CI run it small on the CPU.
#   bash bench/gpu_run.sh            # from the repository root
set -euo pipefail
out=${OUT:-bench/results}
device=${DEVICE:-cuda}
export PYTHONPATH=src
# shellcheck disable=SC2086  # the *_ARGS are word lists on purpose
python bench/bench_dit.py --device "$device" --sizes XL --batch 128 --sample-batch 256 --pipeline --out "$out" \
  ${DIT_ARGS:-}
rate=$(python -c "import glob, json; r = json.load(open(sorted(glob.glob('$out/dit-*.json'))[-1]))
print(max(v for s in r['train'].values() for v in s['img_per_s'].values() if v))")  # the fastest step measured
# shellcheck disable=SC2086
python bench/bench_data.py --device "$device" --latents 8192 --images 4096 --workers 0 8 16 --step-rate "$rate" \
  --out "$out" ${DATA_ARGS:-}
# shellcheck disable=SC2086
python bench/bench_raev2.py --device "$device" --size XL --batch 64 --out "$out" ${RAEV2_ARGS:-}
