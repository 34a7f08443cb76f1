"""RAEv2's training step on cached latents (this pipeline) against the same step encoding online (RAEv2's code encodes
DINOv3-L K=7 at every step): same DiT, batch, objective and optimizer, as a ratio measured in one run.

Pure torch + timm (runs on the GPU image without kedro/dvc): `PYTHONPATH=src python bench/bench_raev2.py`. Random
weights (the speed is the weights'). `--size XL`: RAEv2's released DiT (conf/dit/raev2_XL.yaml) on encoder=dinov3_l_k7
at 256 px, bf16 autocast as RAEv2's README trains; `--size tiny`: the small DiT and an 8-block, 64-wide DINOv3 at
64 px (the CPU check). Results go to bench/results/raev2-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from unirae_pipeline.data.normalization import normalize
from unirae_pipeline.diffusion.transport import draw_raev2, shift_factor, x_prediction_losses
from unirae_pipeline.models.dit_raev2 import RAEv2DiTConfig, build_raev2_dit
from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder
from unirae_pipeline.training.muon import muon_adamw

log = logging.getLogger("bench")
CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_ENCODER = {"model": "vit_large_patch16_dinov3_qkvb.lvd1689m", "weights": "none", "input_size": 64,
                "overrides": {"embed_dim": 64, "depth": 8, "num_heads": 4}, "layers": [1, 3, 5, 7],
                "readout": "mean_plus_global"}
# the DiT preset (conf/dit/) and the encoder (None: encoder=dinov3_l_k7) of each size
SIZES = {"XL": ("raev2_XL", None), "tiny": ("raev2_tiny", TINY_ENCODER)}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="XL")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # RAEv2's train.py sets TF32
    device = args.device
    preset, encoder = SIZES[args.size]
    encoder = encoder or {**yaml.safe_load((CONF / "encoder/dinov3_l_k7.yaml").read_text()), "weights": "none"}
    enc = FrozenEncoder(EncoderConfig(**encoder), seed=0).to(device)
    dit_cfg = RAEv2DiTConfig(**yaml.safe_load((CONF / f"dit/{preset}.yaml").read_text()))
    num_classes = 1000
    model = build_raev2_dit(dit_cfg, enc.latent_shape, num_classes, seed=0).to(device).train().requires_grad_(True)
    opt = muon_adamw(model.parameters(), lr=2e-4)
    shift = shift_factor(enc.latent_shape, 4096)
    images = torch.rand(args.batch, 3, enc.cfg.input_size, enc.cfg.input_size, device=device)
    labels = torch.randint(0, num_classes, (args.batch,), device=device)
    with torch.no_grad():
        cached = enc(images)
    mean, var = cached.mean(0), cached.var(0)  # statistics of the batch: the speed does not depend on them
    autocast = torch.autocast(device, dtype=torch.bfloat16) if device == "cuda" else nullcontext()

    def train_step(latents: Callable[[], torch.Tensor], optimize: bool = True) -> Callable[[], None]:
        def step() -> None:
            x = normalize(latents(), mean, var)  # RAEv2's latents come from rae.encode in fp32, outside autocast
            y, noise, t = draw_raev2(x, labels, null_label=num_classes, label_dropout=0.1, shift=shift)
            with autocast:
                loss = x_prediction_losses(model, x, y, t, noise, t_eps=0.05, base_coeff=1.0)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if optimize:
                opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    # With and without the optimizer step: on a CPU, Muon's fp16 Newton-Schulz (RAEv2's precision, meant for tensor
    # cores) outweighs the rest of a small step; the figures without it isolate what the encoder costs.
    seconds = {}
    for suffix, optimize in (("", True), ("_no_optimizer", False)):
        seconds[f"cached_latents{suffix}"] = timed(train_step(lambda: cached, optimize), args.steps, args.warmup,
                                                   device)
        seconds[f"online_encoding{suffix}"] = timed(train_step(lambda: enc(images), optimize), args.steps,
                                                    args.warmup, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    results = {"device": name, "date": str(datetime.date.today()), "torch": torch.__version__, "size": args.size,
               "batch": args.batch, "latent_shape": list(enc.latent_shape), "baseline": "online_encoding",
               "img_per_s": {k: round(args.batch / v, 2) for k, v in seconds.items()}}
    results["ratio_vs_online"] = {k: round(seconds[k.replace("cached_latents", "online_encoding")] / v, 3)
                                  for k, v in seconds.items()}  # each against the online step of its kind
    out = Path(args.out) / f"raev2-{name.replace(' ', '_')}-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    log.info("%s", json.dumps(results))


if __name__ == "__main__":
    main()
