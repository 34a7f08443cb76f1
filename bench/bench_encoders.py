"""Encoding throughput of the encoder presets (what `cache_latents` spends on ImageNet), as FrozenEncoder runs them:
bicubic resize from the data resolution, normalization, ViT forward, tokens to the latent grid.

Pure torch + timm (runs on the GPU image without kedro/dvc): `PYTHONPATH=src python bench/bench_encoders.py`.
Random weights (the speed is the weights'). Every figure is also a ratio against the baseline measured in the same
run: `dinov2_b` in fp32 (TF32 matmuls). Results go to bench/results/encoders-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder

log = logging.getLogger("bench")
CONF = Path(__file__).resolve().parents[1] / "conf" / "encoder"
# preset -> the data resolution it encodes (the reference's: 256 px, and 512 px for the 448 px encoder)
PRESETS = {"dinov2_b": 256, "siglip2_b": 256, "mae_b": 256, "dinov2_l": 256, "dinov2_b_512": 512, "tiny": 16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rate(preset: str, batch: int, device: str, dtype: torch.dtype | None, steps: int, warmup: int) -> float:
    """Images per second through FrozenEncoder at its preset's data resolution."""
    conf = yaml.safe_load((CONF / f"{preset}.yaml").read_text(encoding="utf-8"))
    enc = FrozenEncoder(EncoderConfig(**{**conf, "weights": "none"}), seed=0).to(device)
    images = torch.rand(batch, 3, PRESETS[preset], PRESETS[preset], device=device)
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()
    with autocast:
        for _ in range(warmup):
            enc(images)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            enc(images)
        sync(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["dinov2_b", "siglip2_b", "mae_b", "dinov2_l", "dinov2_b_512"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as the pipeline's hook sets
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results: dict = {"device": name, "date": str(datetime.date.today()), "torch": torch.__version__,
                     "batch": args.batch, "baseline": f"{args.presets[0]} fp32", "img_per_s": {}, "ratio": {}}
    for preset in args.presets:
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            value = rate(preset, args.batch, args.device, dtype, args.steps, args.warmup)
            results["img_per_s"][f"{preset} {label}"] = round(value, 1)
            log.info("%s %s: %.1f img/s", preset, label, value)
    base = results["img_per_s"][results["baseline"]]
    results["ratio"] = {k: round(v / base, 3) for k, v in results["img_per_s"].items()}
    out = Path(args.out) / f"encoders-{name.replace(' ', '_')}-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    log.info("%s", json.dumps(results["ratio"]))


if __name__ == "__main__":
    main()
