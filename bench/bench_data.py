"""Throughput of the data paths: train_dit's batches from memory-mapped latent shards (and the checksum check of
every shard that a training run pays once), and latent caching (JPEG decode + ADM centre crop + frozen-encoder
forward on the image and its mirror, as cache_latents does).

Pure torch (runs on the GPU image without kedro/dvc): `PYTHONPATH=src python bench/bench_data.py --device cuda`.
Each figure is reported as a ratio against the baseline measured in the same run: in-memory batches for the latent
path, single-process PIL decoding for caching. `--step-rate` (img/s of the training step, from bench_dit.py) turns
the latent path's rate into the margin it feeds the GPU with (the goal: >= 3x). On CPU, `--size tiny` checks that
the script runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unirae_pipeline.data.encoding import Shard, encode_block, encode_uint8, save_shard
from unirae_pipeline.data.images import ImageSet, ImageSplit
from unirae_pipeline.data.latent_rows import LatentRows
from unirae_pipeline.data.latents import LatentStore
from unirae_pipeline.data.loading import ImageDataset
from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder
from unirae_pipeline.training.data import KeyedBatches, TensorBatches

log = logging.getLogger("bench")

SIZES = {  # latent shape, image size, encoder (timm name, input size, overrides)
    "tiny": ((64, 4, 4), 16, ("vit_small_patch14_reg4_dinov2", 16,
                              {"patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4})),
    "imagenet": ((768, 16, 16), 256, ("vit_base_patch14_reg4_dinov2", 224, {})),
}


def _rate(batches, count: int, device: str, warmup: int = 2) -> float:
    """Samples per second delivered on `device` (pinned host memory, non-blocking copies on CUDA)."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(count):
        x = next(it)[0].to(device, non_blocking=True)
        seen += len(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def latent_path(root: Path, shape: tuple[int, ...], n: int, batch: int, workers: list[int], device: str,
                batches: int) -> dict[str, float]:
    """Batches/s of the memory-mapped path with each worker count, next to the same batches from memory."""
    per_shard = max(batch, n // 8)
    gen = torch.Generator().manual_seed(0)
    for k, lo in enumerate(range(0, n, per_shard)):
        m = min(per_shard, n - lo)
        z = torch.randn((m, *shape), generator=gen).to(torch.bfloat16)
        save_shard(root / "partial" / "train" / f"shard_{k:05d}.safetensors",
                   Shard("train", z, torch.randint(0, 1000, (m,), generator=gen), torch.arange(lo, lo + m),
                         torch.zeros(m, dtype=torch.uint8)), "bench")
    store = LatentStore(root / "latents")
    store.assemble(root / "partial", {"train": len(list((root / "partial" / "train").iterdir()))},
                   {"fingerprint": "bench", "latent_shape": list(shape)})
    start = time.perf_counter()  # every shard's checksum, as a training run checks them once before its epochs
    store.checked_files("train")
    verify = n / (time.perf_counter() - start)
    rows = LatentRows(store, "train")
    cache = store.load("train", dtype=torch.bfloat16)
    rates = {"in_memory": _rate(TensorBatches((cache["latents"], cache["labels"]), batch, 0).loader(), batches,
                                device)}
    del cache
    for w in workers:
        rates[f"mmap_{w}_workers"] = _rate(KeyedBatches(rows, batch, 0, w).loader(), batches, device)
    rates["checksum_once_per_run"] = verify  # latents/s of the check (SHA-256 in 8 threads), paid once per run
    return rates


def _jpegs(root: Path, n: int, size: int) -> ImageSet:
    """`n` random JPEGs of ImageNet-like size (a bit larger than `size`, quality 90)."""
    rng = np.random.default_rng(0)
    files = []
    (root / "imgs").mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 256, (size * 3 // 2, size * 7 // 4, 3), dtype=np.uint8)
        path = root / "imgs" / f"{i}.jpg"
        Image.fromarray(img).resize((size * 7 // 4, size * 3 // 2)).save(path, quality=90)
        files.append(str(path.relative_to(root)))
    split = ImageSplit(files, np.zeros(n, dtype=np.int64))
    return ImageSet(root, ["x"], {"train": split, "val": split})


def caching(root: Path, size: int, encoder: tuple, n: int, batch: int, workers: list[int],
            device: str) -> dict[str, float]:
    """Images/s of decode + crop alone (PIL in worker processes; nvJPEG on CUDA) and of cache_latents' own path:
    uint8 batches to the device, mirrored there, encoded in each precision (train split: two encoder passes per
    image, so encoder forwards/s are twice the images/s)."""
    images = _jpegs(root, n, size)
    dataset = ImageDataset(images, "train", size)

    def decode_rate(w: int) -> float:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=w)
        start = time.perf_counter()
        count = sum(len(x) for x, _, _ in loader)
        return count / (time.perf_counter() - start)

    rates = {f"pil_decode_{w}_workers": decode_rate(w) for w in workers}
    if device == "cuda":
        import torchvision

        data = [torchvision.io.read_file(str(root / f)) for f in images.splits["train"].files]
        torchvision.io.decode_jpeg(data[:batch], device="cuda")  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        for lo in range(0, n, batch):
            torchvision.io.decode_jpeg(data[lo: lo + batch], device="cuda")
        torch.cuda.synchronize()
        rates["nvjpeg_decode"] = n / (time.perf_counter() - start)
    name, input_size, overrides = encoder
    enc = FrozenEncoder(EncoderConfig(name, "none", input_size, overrides), seed=0).to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=max(workers),
                                         pin_memory=device == "cuda")
    for precision in ("fp32", "bf16") if device == "cuda" else ("fp32",):
        encode = encode_uint8(enc, precision, device)
        encode_block(encode, [next(iter(loader))], "train", True, torch.bfloat16, device)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        encode_block(encode, loader, "train", True, torch.bfloat16, device)
        rates[f"cache_{precision}_{max(workers)}_workers"] = n / (time.perf_counter() - start)  # .cpu() synced
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="imagenet", choices=list(SIZES))
    parser.add_argument("--latents", type=int, default=16384, help="latents in the synthetic cache")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--images", type=int, default=2048, help="JPEGs for the caching figures")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--step-rate", type=float, default=None, help="training img/s to compare the feed with")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shape, image_size, encoder = SIZES[args.size]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = {"device": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
               "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        latent = latent_path(Path(tmp) / "latents", shape, args.latents, args.batch, args.workers, args.device,
                             args.batches)
        base = latent["in_memory"]
        results["latent_path"] = {"batch": args.batch, "latent_shape": list(shape), "samples_per_s": latent,
                                  "ratio_vs_in_memory": {k: v / base for k, v in latent.items()}}
        if args.step_rate:
            results["latent_path"]["feed_margin_vs_step_rate"] = {k: v / args.step_rate for k, v in latent.items()}
        log.info("latent path: %s", results["latent_path"])
        cached = caching(Path(tmp) / "jpegs", image_size, encoder, args.images, args.batch, args.workers,
                         args.device)
        base = cached[f"pil_decode_{args.workers[0]}_workers"]
        results["caching"] = {"images": args.images, "image_size": image_size, "img_per_s": cached,
                              f"ratio_vs_pil_decode_{args.workers[0]}_workers": {k: v / base
                                                                                 for k, v in cached.items()},
                              # each train image is encoded twice (plain + mirrored): encoder forwards per second
                              "latents_per_s": {k: 2 * v for k, v in cached.items() if k.startswith("cache_")}}
        log.info("caching: %s", results["caching"])
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"data-{name.replace(' ', '_').replace('/', '_')}-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
