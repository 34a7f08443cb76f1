#!/usr/bin/env bash
# The encoder and 512-px GPU figures in one device call (about 5 minutes on an H200; the image needs torch and timm >= 1.0.31,
# carried as a wheel when older): encoding throughput of every encoder preset (bench_encoders.py), then DiT-DH-XL on
# ImageNet-512's 768x32x32 latents (training step eager and compiled, 50-point Euler + CFG sampling).
#   bash bench/gpu_encoders_512.sh        # from the repository root
set -euo pipefail
out=${OUT:-bench/results}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
python bench/bench_encoders.py --batch 256 --steps 20 --out "$out"
python bench/bench_dit.py --sizes XL512 --batch 32 --steps 10 --warmup 3 --sample-batch 64 --sample-steps 50 \
  --out "$out"
