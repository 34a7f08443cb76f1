"""Throughput of the DiT-DH training step and of Euler + CFG sampling on cached-latent shapes.

Pure torch (runs on the GPU image without kedro/dvc): `PYTHONPATH=src python bench/bench_dit.py --device cuda`.
Every variant is reported as a ratio against the baseline (eager fp32 with foreach AdamW) measured in the same run.
Results go to bench/results/<device>-<date>.json. On CPU, `--sizes tiny` checks that the script runs.
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

from unirae_pipeline.diffusion.sampling import (
    autoguided_velocity,
    guided_velocity,
    module_velocity,
    sample_ode,
    time_grid,
)
from unirae_pipeline.diffusion.transport import TransportConfig, flow_matching_loss, sample_time, shift_factor
from unirae_pipeline.models.dit import DiTConfig, build_dit
from unirae_pipeline.training.optim import EMA

log = logging.getLogger("bench")

CONF = Path(__file__).resolve().parents[1] / "conf" / "dit"
SIZES = {  # name: (the conf/dit preset, latent shape, classes)
    "tiny": ("tiny", (64, 4, 4), 10),
    "S": ("S", (768, 16, 16), 1000),
    "XL": ("XL", (768, 16, 16), 1000),
    "XL512": ("XL", (768, 32, 32), 1000),  # ImageNet-512's latents
}


def dit_preset(name: str) -> DiTConfig:
    """A `conf/dit` preset as Hydra composes it (the presets it lists under `defaults` first, then its own keys), read
    with PyYAML alone: the GPU image has no Hydra."""
    def keys(preset: str) -> dict:
        spec = yaml.safe_load((CONF / f"{preset}.yaml").read_text(encoding="utf-8"))
        merged = {}
        for base in spec.pop("defaults", []):
            merged.update({} if base == "_self_" else keys(base))
        return {**merged, **spec}

    return DiTConfig(**keys(name))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_rate(size: str, batch: int, device: str, dtype: torch.dtype | None, mode: str | None, fused: bool,
               steps: int, warmup: int) -> float:
    """Images per second of forward + backward + AdamW + EMA; `mode`: torch.compile's mode, None for eager."""
    preset, shape, classes = SIZES[size]
    model = build_dit(dit_preset(preset), shape, classes, seed=0).to(device).train()
    ema = EMA(model, 0.9995)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0,
                            **({"fused": True} if fused else {"foreach": True}))
    net = torch.compile(model, mode=mode) if mode else model
    transport, s = TransportConfig("logit_normal", 4096, 0.0, 1.0, "var"), shift_factor(shape, 4096)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()

    def step() -> None:
        with autocast:
            loss = flow_matching_loss(net, x, y, sample_time(transport, batch, s, device=device), torch.randn_like(x))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def pipeline_rate(size: str, batch: int, device: str, compiled: bool, steps: int, warmup: int) -> float:
    """Images per second of train_dit's own loop: `fit` (Lightning, bf16-mixed on CUDA) of the TrainModule with
    dit_objective on bf16 latents normalized on the device, timed from step `warmup` on. The gap to `train_rate` is
    the cost of the loop itself (hooks, logging, the data hand-over). Needs lightning, pandas and tensorboard."""
    import os
    import tempfile
    from functools import partial

    import lightning as L

    from unirae_pipeline.runtime import RuntimeConfig
    from unirae_pipeline.training.data import TensorBatches
    from unirae_pipeline.training.fit import TrainerConfig, fit
    from unirae_pipeline.training.modules import TrainModule
    from unirae_pipeline.training.objectives import dit_objective
    from unirae_pipeline.training.optim import OptimConfig

    preset, shape, classes = SIZES[size]
    model = build_dit(dit_preset(preset), shape, classes, seed=0)
    optim = OptimConfig("steps", warmup + steps, batch, 2e-4, 2e-5, (0.9, 0.95), 0.0, 0, "constant", None, None,
                        0.9995, 1.0, False)
    transport = TransportConfig("logit_normal", 4096, 0.0, 1.0, "var")
    stats = torch.zeros(shape), torch.ones(shape)
    module = TrainModule(model, optim, partial(dit_objective, transport=transport, shift=shift_factor(shape, 4096),
                                               stats=stats))
    cuda = device == "cuda"
    trainer = TrainerConfig("gpu" if cuda else "cpu", 1, 1, "auto", "bf16-mixed" if cuda else "32-true", 1)
    run = RuntimeConfig(0, 100, 0, compiled, "auto", ".cache", "logs")
    n = batch * 4
    batches = TensorBatches((torch.randn(n, *shape).to(torch.bfloat16), torch.randint(0, classes, (n,))), batch, 0)
    times: dict[str, float] = {}

    class Timer(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step in (warmup, warmup + steps):
                sync(device)
                times[f"at_{trainer.global_step}"] = time.perf_counter()

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # fit's TensorBoard logs
        try:
            fit(module, batches, trainer, run, "bench", seed=0, callbacks=(Timer(),))
        finally:
            os.chdir(cwd)
    return batch * steps / (times[f"at_{warmup + steps}"] - times[f"at_{warmup}"])


@torch.no_grad()
def sample_rate(size: str, batch: int, device: str, dtype: torch.dtype | None, compiled: bool, num_steps: int,
                guide: str | None = None) -> float:
    """Images per second of a `num_steps`-point Euler ODE with CFG (two forwards per step), or with AutoGuidance by a
    `guide`-sized DiT-DH on the same latents (the model's forward and the guide's), latents only."""
    preset, shape, classes = SIZES[size]
    model = build_dit(dit_preset(preset), shape, classes, seed=0).to(device).eval()
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()
    net = module_velocity(model, device, compiled)
    if guide is None:
        velocity = guided_velocity(net, classes, 1.5, 0.0, 1.0)  # as `sample`
    else:
        small = build_dit(dit_preset(SIZES[guide][0]), shape, classes, seed=1).to(device).eval()
        velocity = autoguided_velocity(net, module_velocity(small, device, compiled), 1.5, 0.0, 1.0)
    grid = time_grid(num_steps, shift_factor(shape, 4096)).float()
    noise = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    with autocast:
        sample_ode(velocity, noise, y, grid[:3], "euler")  # warm-up / compile
        sync(device)
        start = time.perf_counter()
        sample_ode(velocity, noise, y, grid, "euler")
        sync(device)
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", default=["S", "XL"], choices=list(SIZES))
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="one batch per size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-modes", nargs="+", default=["default"],
                        help="torch.compile modes of the training step, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--pipeline", action="store_true", help="also time train_dit's own Lightning loop")
    parser.add_argument("--guide", choices=[k for k in SIZES if not k.endswith("512")],
                        help="also sample with AutoGuidance by a DiT-DH of this size (the 1.13 settings: S)")
    parser.add_argument("--sample-only", action="store_true", help="time sampling only")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = args.device
    bf16 = torch.bfloat16 if dev == "cuda" else None
    # XL 128 fits an H100; XL512 32 in bf16 (16 in fp32) on an H200
    batches = args.batch or [{"tiny": 32, "S": 256, "XL": 128, "XL512": 32}[s] for s in args.sizes]
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    results = {"device": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__, "train": {},
               "sample": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"dit-{name.replace(' ', '_').replace('/', '_')}-{results['date']}.json"
    # variant: (autocast dtype, torch.compile mode or None, fused AdamW); the first one is the baseline of the ratios
    variants = {"eager_fp32_foreach": (None, None, False)}
    if dev == "cuda":
        variants["eager_bf16_fused"] = (bf16, None, True)
    for mode in [] if args.no_compile else args.compile_modes:
        tag = "compiled" if mode == "default" else f"compiled_{mode.replace('-', '_')}"
        variants[f"{tag}_{'bf16_fused' if dev == 'cuda' else 'fp32_foreach'}"] = (bf16, mode, dev == "cuda")
    for size, batch in zip(args.sizes, batches):
        rates = {}
        for label, (dtype, mode, fused) in {} if args.sample_only else variants.items():
            try:
                rates[label] = train_rate(size, batch, dev, dtype, mode, fused, args.steps, args.warmup)
            except torch.OutOfMemoryError:
                rates[label] = None
            if dev == "cuda":
                torch.cuda.empty_cache()
            log.info("train %s batch %d %s: %s img/s", size, batch, label, rates[label])
            base = rates["eager_fp32_foreach"]
            results["train"][size] = {"batch": batch, "img_per_s": rates, "ratio_vs_eager_fp32":
                                      {k: (v / base if v and base else None) for k, v in rates.items()}}
            out.write_text(json.dumps(results, indent=2))  # a killed run keeps what it measured
        if args.pipeline and not args.sample_only:
            label = f"train_dit_fit_{'compiled' if not args.no_compile else 'eager'}"
            try:
                rates[label] = pipeline_rate(size, batch, dev, not args.no_compile, args.steps, args.warmup)
            except (ImportError, torch.OutOfMemoryError) as err:  # e.g. no tensorboard on the GPU image
                log.warning("train_dit loop not measured: %s", err)
                rates[label] = None
            log.info("train %s batch %d %s: %s img/s", size, batch, label, rates[label])
            results["train"][size]["ratio_vs_eager_fp32"][label] = rates[label] / base if rates[label] else None
            out.write_text(json.dumps(results, indent=2))
        precision = "bf16" if bf16 else "fp32"
        srates = {}
        for compiled in (False, True) if not args.no_compile else (False,):
            tag = f"{'compiled' if compiled else 'eager'}_{precision}"
            srates[tag] = sample_rate(size, args.sample_batch, dev, bf16, compiled, args.sample_steps)
            if args.guide:
                srates[f"{tag}_autoguidance_{args.guide}"] = sample_rate(size, args.sample_batch, dev, bf16, compiled,
                                                                        args.sample_steps, args.guide)
        log.info("sample %s (%d-point Euler + CFG): %s img/s", size, args.sample_steps, srates)
        results["sample"][size] = {"batch": args.sample_batch, "num_steps": args.sample_steps, "img_per_s": srates}
        out.write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
