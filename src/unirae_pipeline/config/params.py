"""params.yaml as one typed tree: every group (and its sub-groups) a validated, frozen dataclass, built once before
any heavy work runs and handed to the nodes as is; the files a stage needs are checked when it starts
(`check_environment`).

    python -m unirae_pipeline.config data/02_intermediate/params_checked.txt

builds the tree from params.yaml and rewrites the marker file with fixed text: DVC's first stage (`check_params`),
which every other stage depends on, so that a rejected value stops `dvc repro` / `dvc exp run` before any stage
deletes its outputs, while an accepted change reruns no stage for the marker's sake (its content never changes).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.encoding import CacheConfig
from ..data.source import DataConfig, check_file_names, count_images
from ..diffusion.transport import TransportConfig
from ..models.decoder import DecoderConfig
from ..models.dit import AnyDiTConfig
from ..models.dit_raev2 import RAEv2DiTConfig
from ..models.encoder import EncoderConfig
from ..runtime import RuntimeConfig
from ..training.fit import TrainerConfig
from ..training.optim import DiTTrainConfig
from ..training.rae import RAETrainConfig
from .build import build, read_params
from .fid import FIDConfig
from .guide import GuideConfig
from .sample import SampleConfig

BATCH_KEYS = ("train_rae.batch_size", "train_dit.batch_size", "fid.train.batch_size")
MAX_SEED = 2 ** 24 - 1  # every rank's seed, seed x ranks + rank, fits 32 bits on up to 256 ranks


@dataclass(frozen=True)
class Params:
    """The root of params.yaml."""

    data: DataConfig
    latents: CacheConfig
    encoder: EncoderConfig
    decoder: DecoderConfig
    dit: AnyDiTConfig
    trainer: TrainerConfig
    runtime: RuntimeConfig
    diffusion: TransportConfig
    train_rae: RAETrainConfig
    train_dit: DiTTrainConfig
    guide: GuideConfig
    fid: FIDConfig
    sample: SampleConfig
    seed: int

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:  # its type is checked with every other field's
            raise ValueError(f"params 'seed' must be an integer in [0, {MAX_SEED}], got {self.seed!r}: each rank "
                             "seeds seed x ranks + rank, which Lightning and numpy take as 32 bits (256 ranks)")
        grid = self.encoder.latent_shape[1]
        if self.decoder.patch_size * grid != self.data.image_size:
            raise ValueError(f"decoder.patch_size {self.decoder.patch_size} x the encoder's latent grid {grid} "
                             f"(encoder.input_size {self.encoder.input_size} / its patch size) must equal "
                             f"data.image_size {self.data.image_size}: set data.image_size="
                             f"{self.decoder.patch_size * grid}, or decoder.patch_size or encoder.input_size to match")
        if self.train_rae.encoder_rope_rescale is not None and self.encoder.family.name != "dinov3":
            raise ValueError(f"train_rae.encoder_rope_rescale rescales DINOv3's RoPE; encoder.model "
                             f"{self.encoder.model!r} has none: set train_rae.encoder_rope_rescale=null")
        self.check_method()
        if self.data.source == "shapes":  # the built-in set's size is known before it exists
            self.data.shapes.check_size(self.data.image_size)
            if self.fid.extractor == "classifier" and self.data.shapes.num_classes < 2:
                raise ValueError("data.shapes.num_classes must be >= 2 with fid.extractor classifier (its metrics "
                                 "are class accuracy and features learnt by telling classes apart)")
            self.check_batch_sizes(self.data.shapes.num_classes * self.data.shapes.train_per_class,
                                   "data.shapes: num_classes x train_per_class")

    def check_method(self) -> None:
        """The keys that belong to one method: RAEv2's DiT trains on its logit-normal times and guides itself (no
        AutoGuidance guide); internal guidance needs its base head."""
        sampler = self.sample.sampler
        if isinstance(self.dit, RAEv2DiTConfig):
            if self.diffusion.time_dist != "logit_normal":
                raise ValueError("dit.arch raev2 trains on RAEv2's (untruncated) logit-normal times: set "
                                 "diffusion.time_dist=logit_normal (method=raev2 sets every RAEv2 value)")
            if self.guide.source == "train" or (sampler.guidance == "autoguidance" and sampler.guidance_scale > 1):
                raise ValueError("dit.arch raev2 guides itself (sample.sampler.ig_scale) and with CFG; AutoGuidance "
                                 "is DiT-DH's: set sample.sampler.guidance=cfg and guide=snapshot")
        elif sampler.ig_scale > 1:
            raise ValueError(f"sample.sampler.ig_scale {sampler.ig_scale} guides RAEv2's DiT by its base head; "
                             "dit.arch dit_dh has none: set sample.sampler.ig_scale=1, or dit=raev2_tiny")

    def batch_keys(self) -> tuple[str, ...]:
        """The fixed batch sizes drawn from the training images (the FID classifier's only when it is trained here;
        a recipe with `fit_batch` fits its batch to any set)."""
        keys = BATCH_KEYS if self.fid.extractor == "classifier" else BATCH_KEYS[:2]
        return tuple(key for key in keys if not self.get(key.replace("batch_size", "fit_batch")))

    def check_batch_sizes(self, images: int, source: str) -> None:
        """No fixed batch of the training stages may exceed the training set (each epoch drops its last partial
        batch)."""
        for key in self.batch_keys():
            if self.get(key) > images:
                fit = key.replace("batch_size", "fit_batch")
                raise ValueError(f"{key} {self.get(key)} exceeds the {images} training images ({source}): lower "
                                 f"it, or set {fit}=true to fit it to the set")

    def get(self, key: str) -> Any:
        """The value at a dotted params key (`sample.sampler.method`), as typed as the tree holds it."""
        value: Any = self
        for part in key.split("."):
            if not dataclasses.is_dataclass(value) or not hasattr(value, part):
                raise KeyError(f"params.yaml has no key {key!r}")
            value = getattr(value, part)
        return value


def load_params(params: dict) -> Params:
    """Build the whole tree once; the first invalid value raises, naming its key."""
    return build(Params, params, "")


def check_environment(params: Params, keys: Iterable[str]) -> None:
    """The files (weights, data, reference statistics) that the params `keys` need, for the groups that have such
    needs: run when a stage that reads them starts, so that a machine runs the stages whose files it has."""
    groups = sorted({key.split(".")[0] for key in keys})
    for name in groups:
        group = getattr(params, name)
        if hasattr(group, "check_environment"):
            group.check_environment()
    if params.data.source == "imagefolder" and "data" in groups:
        _check_image_folder(params)


def _check_image_folder(params: Params) -> None:
    """The couplings of an ImageFolder tree with the other groups, from a count by file name that stops at the
    largest batch: checked by the first stage (prepare_data reads `data`), before any stage spends compute."""
    limit = max((params.get(key) for key in params.batch_keys()), default=1)
    classes, images = count_images(params.data.root, "train", limit)
    if params.fid.extractor == "classifier" and classes < 2:
        raise ValueError(f"data.root {params.data.root!r} has {classes} class folder(s) in train/; fid.extractor "
                         "classifier needs >= 2 (use fid.extractor inception or dinov2 for a one-class set)")
    if images < limit:
        params.check_batch_sizes(images, f"image files in {params.data.root}/train")


MARKER_TEXT = ("params.yaml was built and checked (python -m unirae_pipeline.config): every DVC stage depends on this "
               "file, so a rejected value stops a run before any stage deletes its outputs.\n")


def main(argv: list[str] | None = None) -> int:
    """Check params.yaml; on success write the marker (argv[0]); on failure one line naming the key, exit code 2."""
    marker = Path((argv if argv is not None else sys.argv[1:])[0])
    try:
        params = load_params(read_params("params.yaml"))
        check_environment(params, [f.name for f in dataclasses.fields(Params)])  # every file a stage will read
        if params.data.source == "imagefolder":
            check_file_names(params.data.root)  # DVC hashes the tree (prepare_data's dependency) by name
    except (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError) as err:
        message = str(err.args[0] if err.args else err)
        sys.stderr.write(f"{message if message.startswith('params.yaml') else 'params.yaml: ' + message}\n")
        sys.stderr.write("Nothing ran and no output was removed. Restore the last committed values with "
                         "`git checkout params.yaml` (or `dvc exp apply <exp>`), or fix the value and rerun.\n")
        return 2
    if not marker.is_file() or marker.read_text(encoding="utf-8") != MARKER_TEXT:
        marker.write_text(MARKER_TEXT, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
