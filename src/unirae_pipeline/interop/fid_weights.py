"""The loader layer of pretrained weights, part three: the Fréchet distance's feature networks, torch-fidelity's
Inception-v3 and a DINOv2 ViT, read into the `extractor` model file that fid_reference writes and `Extractor` opens
(which never reads a foreign file). Nothing is downloaded: a missing file is an error naming its params key."""

from __future__ import annotations

import timm

from ..evaluation.extractors import DINOv2Features
from ..models.serialization import ModelFile, read_state_dict


def inception_file(path: str) -> ModelFile:
    """torch-fidelity's `pt_inception-2015-12-05` file as tensors only (weights_only=True: torch-fidelity itself
    would unpickle the file without that guard)."""
    return ModelFile("extractor", read_state_dict(path, "fid.inception_weights", prefer=()), {"kind": "inception"})


def dinov2_file(path: str, model: str) -> ModelFile:
    """A DINOv2 checkpoint (torch-hub or timm layout) as timm's `model` at the extractor's 224 px: mask token dropped,
    position table resampled by timm's own filter."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_state_dict(path, "fid.dinov2_weights")
    net = timm.create_model(model, pretrained=False, num_classes=0, img_size=DINOv2Features.SIZE)
    return ModelFile("extractor", checkpoint_filter_fn(state, net), {"kind": "dinov2", "model": model})
