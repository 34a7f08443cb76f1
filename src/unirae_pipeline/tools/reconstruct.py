"""Reconstruct a folder of images with an RAE and score it (the reference's `stage1_sample`):

    python -m unirae_pipeline.tools.reconstruct /path/to/images logs/recon                  # the decoder trained here
    python -m unirae_pipeline.tools.reconstruct /path/to/images logs/recon --diffusers /rae/folder  # a diffusers RAE
    python -m unirae_pipeline.tools.reconstruct /path/to/images logs/recon --official model.pt --official-params '{...}'

Every image under the folder (sub-folders included, unreadable files skipped with a count) is centre-cropped to the
decoder's size as the pipeline crops, encoded by params.yaml's `encoder` (or the diffusers folder's), decoded, and
written as `<out>/images/<its path>.png` (`png_names`) in uint8 as the reference exports them. `<out>/metrics.json`
holds PSNR and SSIM against the crops and the FD between the crops' and the reconstructions' features (rFID with
`fid.extractor: inception`), in the feature network that `fid_reference` built; `<out>/reconstructions.png` shows 8
pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from ..config.build import build
from ..data.images import ImageSet, ImageSplit, check_image, folder_files
from ..data.loading import ImageDataset
from ..evaluation.extractors import Extractor
from ..evaluation.fd import feature_stats
from ..evaluation.report import labelled_grid
from ..evaluation.scoring import reconstruct
from ..fileio import png_info
from ..interop.diffusers import load_diffusers_decoder
from ..interop.diffusers_folder import DiffusersRAE
from ..interop.encoder_weights import encoder_state
from ..interop.official import load_official_decoder, read_checkpoint
from ..models.decoder import ViTDecoder, decoder_from_file
from ..models.encoder import EncoderConfig, FrozenEncoder
from ..models.serialization import read_model_file
from ..runtime.ranks import local_device

log = logging.getLogger(__name__)
SHOWN = 8


def image_files(root: Path, workers: int | None = None) -> ImageSet:
    """Every usable image under `root` (`folder_files`: hidden entries left out; each decoded once, in threads),
    labelled by its top-level sub-folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"images: {str(root)!r} is not a folder")
    found = folder_files(root)[0]
    with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        usable = [p.relative_to(root) for p, problem in zip(found, pool.map(check_image, found)) if problem is None]
    if len(usable) < 2:
        raise ValueError(f"images: {root} holds {len(usable)} usable image(s); the FD needs at least 2")
    if len(usable) < len(found):
        log.warning("%s: skipped %d files that are not readable images", root, len(found) - len(usable))
    folders = sorted({p.parts[0] for p in usable if len(p.parts) > 1})
    labels = [folders.index(p.parts[0]) if len(p.parts) > 1 else 0 for p in usable]
    return ImageSet(root, folders or [""], {"all": ImageSplit([str(p) for p in usable],
                                                              np.asarray(labels, dtype=np.int64))})


def png_names(files: list[str]) -> list[str]:
    """Each image's output name: its path with the suffix .png, or its whole name plus .png where two images would
    share one (`x.jpg` and `x.png` become `x.jpg.png` and `x.png.png`), so that no reconstruction overwrites another."""
    plain = [str(Path(f).with_suffix(".png")) for f in files]
    shared = {name for name, count in Counter(plain).items() if count > 1}
    return [f + ".png" if name in shared else name for f, name in zip(files, plain)]


def load_rae(params_file: Path, decoder_file: Path, diffusers: Path | None, official: Path | None,
             official_params: dict, seed: int) -> tuple[FrozenEncoder, ViTDecoder]:
    """The encoder of `params_file` (weights from the diffusers folder when one is given) and the decoder: the one
    trained here, a diffusers RAE's or a released reference decoder (`model.pt` with its config's sizes)."""
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "encoder" not in raw:
        raise KeyError(f"--params {params_file}: no `encoder` group")
    cfg = build(EncoderConfig, raw["encoder"], "encoder")
    if diffusers is not None:
        rae = DiffusersRAE(diffusers, "--diffusers")
        cfg = replace(cfg, weights=str(diffusers))
        return FrozenEncoder(cfg, seed, encoder_state(cfg)), load_diffusers_decoder(rae)
    cfg.check_environment()
    if official is not None:  # de-normalized as this encoder normalizes, as the reference's RAE.decode does
        mean, std = cfg.pixel_norm
        decoder = load_official_decoder(read_checkpoint(official), **{"image_mean": mean, "image_std": std,
                                                                      **official_params})
        return FrozenEncoder(cfg, seed, encoder_state(cfg)), decoder
    trained = read_model_file(decoder_file, "decoder", "--decoder (train_rae's output)")
    return FrozenEncoder(cfg, seed, encoder_state(cfg)), decoder_from_file(trained)


def run(image_set: ImageSet, out: Path, encoder: FrozenEncoder, decoder: ViTDecoder, extractor: Extractor,
        batch_size: int, workers: int) -> dict[str, float]:
    """Reconstruct and score every image of `image_set` (`image_files`), writing the PNGs, metrics.json and the
    pairs' grid to `out`."""
    files = png_names(image_set.splits["all"].files)
    size, device = decoder.image_size, local_device()
    encoder, decoder = encoder.to(device), decoder.to(device)
    loader = torch.utils.data.DataLoader(ImageDataset(image_set, "all", size), batch_size=batch_size,
                                         num_workers=workers)
    originals: list[torch.Tensor] = []

    def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for real, labels, _ in loader:
            originals.append(extractor(real)[0].float().cpu())
            yield encoder(real.to(device).float() / 255), real, labels

    written = 0

    def save(recon: torch.Tensor) -> None:
        nonlocal written
        for image in recon.permute(0, 2, 3, 1).cpu().numpy():
            target = out / "images" / files[written]
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
            written += 1

    result = reconstruct(decoder, extractor, pairs(), device, set(range(SHOWN)), keep=save)
    metrics = result.metrics("", feature_stats(torch.cat(originals)))
    metrics = {"count": result.count, "image_size": size, **metrics}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    real, fake = (torch.stack([result.shown[i][j] for i in sorted(result.shown)]) for j in (0, 1))
    grid = labelled_grid(torch.cat([real, fake]).permute(0, 2, 3, 1).numpy(), ncol=len(real),
                         rows=["original", "decoded"])
    grid.save(out / "reconstructions.png", pnginfo=png_info(grid))
    log.info("reconstructed %d images of %s at %d px into %s: %s", result.count, image_set.root, size, out,
             {k: round(v, 4) for k, v in metrics.items()})
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="a folder of images (sub-folders included)")
    parser.add_argument("out", type=Path, help="where the reconstructions and metrics.json go")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="its `encoder` group is used")
    parser.add_argument("--decoder", type=Path, default=Path("data/06_models/decoder.safetensors"))
    parser.add_argument("--diffusers", type=Path, help="a diffusers AutoencoderRAE folder: its encoder and decoder")
    parser.add_argument("--official", type=Path, help="a released reference decoder (model.pt)")
    parser.add_argument("--official-params", type=json.loads, default={},
                        help="its sizes as JSON, e.g. the ViT-XL one: '{\"hidden_size\": 1152, \"depth\": 28, "
                             "\"num_heads\": 16, \"mlp_dim\": 4096, \"patch_size\": 16, \"latent_dim\": 768, "
                             "\"num_patches\": 256}'")
    parser.add_argument("--features", type=Path, default=Path("data/06_models/feature_extractor.safetensors"),
                        help="fid_reference's feature network (the FD's feature space)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    parser.add_argument("--seed", type=int, default=0, help="the seed of a weightless (`none`) encoder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        image_set = image_files(args.images)  # the cheap checks first
        encoder, decoder = load_rae(args.params, args.decoder, args.diffusers, args.official, args.official_params,
                                    args.seed)
        extractor = Extractor(read_model_file(args.features, "extractor", "--features (fid_reference's output)"))
        args.out.mkdir(parents=True, exist_ok=True)
        run(image_set, args.out, encoder, decoder, extractor, args.batch_size, args.workers)
    except (FileNotFoundError, KeyError, ValueError) as err:
        sys.stderr.write(f"reconstruct: {err.args[0] if err.args else err}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
