"""`python -m unirae_pipeline.tools.reconstruct`: a folder of images through an RAE (trained here, or a diffusers one),
the reconstructions written as PNGs and scored (PSNR, SSIM, FD in the pipeline's feature space)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from unirae_pipeline.evaluation.classifier import ShapeClassifier
from unirae_pipeline.evaluation.report import grid_labels
from unirae_pipeline.interop.encoder_weights import encoder_state
from unirae_pipeline.io.datasets import ModelFileDataset
from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder, decoder_file
from unirae_pipeline.models.serialization import ModelFile
from unirae_pipeline.tools.reconstruct import main

from .conftest import ROOT, typed, write_folder


@pytest.fixture
def features(tmp_path):
    """A classifier feature network (random weights) as fid_reference writes it."""
    fid = typed("fid", yaml.safe_load((ROOT / "params.yaml").read_text())["fid"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = ShapeClassifier(fid.classifier, 2)
    file = ModelFile.of("extractor", net, kind="classifier", config=fid.classifier.to_dict(), num_classes=2)
    ModelFileDataset(filepath=str(tmp_path / "features.safetensors"), kind="extractor").save(file)
    return tmp_path / "features.safetensors"


def test_a_folder_through_the_rae_trained_here(tmp_path, features):
    """The committed params' tiny encoder and a decoder file: every image (sub-folders too, an unreadable file
    skipped) comes back as a 16 px PNG at its own path, with finite scores and a labelled grid."""
    images = write_folder(tmp_path / "images", {"a": 3, "b": 3}, size=40)
    (images / "train" / "a" / "broken.png").write_bytes(b"not an image")
    with Image.open(images / "train" / "a" / "0.png") as img:  # a second image named 0: each keeps its output
        img.transpose(Image.Transpose.ROTATE_90).save(images / "train" / "a" / "0.jpg", quality=95)
    torch.manual_seed(0)
    decoder = ViTDecoder(DecoderConfig(64, 1, 4, 128, 4, 0.0, "uniform"), 64, 4)
    ModelFileDataset(filepath=str(tmp_path / "decoder.safetensors"), kind="decoder").save(decoder_file(decoder, "any"))
    out = tmp_path / "out"
    assert main([str(images), str(out), "--params", str(ROOT / "params.yaml"), "--decoder",
                 str(tmp_path / "decoder.safetensors"), "--features", str(features), "--batch-size", "5"]) == 0
    written = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    expected = {f"{split}/{c}/{i}.png" for split in ("train", "val") for c in "ab" for i in range(3)}
    assert written == sorted(expected - {"train/a/0.png"} | {"train/a/0.png.png", "train/a/0.jpg.png"})
    with Image.open(out / "images" / "train" / "a" / "0.png.png") as img, \
            Image.open(out / "images" / "train" / "a" / "0.jpg.png") as other:
        assert img.size == (16, 16) and not np.array_equal(np.asarray(img), np.asarray(other))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 13 and metrics["image_size"] == 16
    assert all(np.isfinite(metrics[k]) for k in ("psnr", "ssim", "recon_fd"))
    with Image.open(out / "reconstructions.png") as grid:
        assert grid_labels(grid) == ["original", "decoded"]


def test_a_folder_through_a_diffusers_rae_equals_its_own_reconstructions(tmp_path, features):
    """`--diffusers`: a SigLIP2 AutoencoderRAE folder's encoder (params' `encoder` preset naming its family) and
    decoder give diffusers' own reconstructions of the same crops, to one level of 255 (on a 16x16 grid: on others
    diffusers' decoder positions depart from the reference's, see test_encoders)."""
    from .test_encoders import FAMILIES, HEADS, PATCH, WIDTH, random_rae

    rae = random_rae("siglip2", 64, decoder_hidden_size=64, decoder_num_hidden_layers=1,
                     decoder_num_attention_heads=4, decoder_intermediate_size=128, patch_size=4)
    rae.save_pretrained(tmp_path / "rae")
    model, overrides = FAMILIES["siglip2"]
    encoder = {"model": model, "weights": "none", "input_size": 64,
               "overrides": {"patch_size": PATCH, "embed_dim": WIDTH, "depth": 2, "num_heads": HEADS, **overrides}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"encoder": encoder}), encoding="utf-8")
    images = write_folder(tmp_path / "images", {"x": 2}, size=64)
    out = tmp_path / "out"
    assert main([str(images), str(out), "--params", str(tmp_path / "params.yaml"), "--diffusers",
                 str(tmp_path / "rae"), "--features", str(features)]) == 0
    for path in sorted((images / "train" / "x").glob("*.png")):
        with Image.open(path) as img:
            crop = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            theirs = (rae(crop).sample.clamp(0, 1) * 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        with Image.open(out / "images" / "train" / "x" / path.name) as img:
            ours = np.asarray(img)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_bad_inputs_are_named(tmp_path, features, capsys):
    images = write_folder(tmp_path / "images", {"a": 1}, size=16)
    args = ["--params", str(ROOT / "params.yaml"), "--features", str(features)]
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), *args, "--decoder", str(features)]) == 2
    assert main([str(images), str(tmp_path / "out"), *args, "--decoder", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "--decoder (train_rae's output)" in err and "not found" in err


def test_a_folder_through_a_released_reference_decoder(tmp_path, features):
    """`--official model.pt --official-params`: the reference's own decoder file (the official-code fixture's random
    GeneralDecoder, saved as the releases are) decodes params' encoder's latents, de-normalized as that encoder
    normalizes; the PNGs are its reconstructions exactly."""
    from unirae_pipeline.data.loading import center_crop
    from unirae_pipeline.evaluation.report import quantize
    from unirae_pipeline.interop.official import load_official_decoder
    from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder

    from .test_official import read_fixture

    _, meta, _, decoder_state = read_fixture()
    torch.save(decoder_state, tmp_path / "model.pt")
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["encoder"]
    encoder = {**committed, "overrides": {**committed["overrides"], "embed_dim": meta["decoder"]["latent_dim"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"encoder": encoder}), encoding="utf-8")
    images = write_folder(tmp_path / "images", {"a": 2}, size=24)
    out = tmp_path / "out"
    assert main([str(images), str(out), "--params", str(tmp_path / "params.yaml"), "--official",
                 str(tmp_path / "model.pt"), "--official-params", json.dumps(meta["decoder"]), "--features",
                 str(features)]) == 0
    cfg = EncoderConfig(**encoder)
    enc = FrozenEncoder(cfg, 0, encoder_state(cfg))
    dec = load_official_decoder(decoder_state, **meta["decoder"])
    path = images / "train" / "a" / "0.png"
    with Image.open(path) as img:
        crop = torch.from_numpy(np.array(center_crop(img.convert("RGB"), 16))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = quantize(dec(enc(crop)))[0].permute(1, 2, 0).numpy()
    with Image.open(out / "images" / "train" / "a" / "0.png") as img:
        assert np.array_equal(np.asarray(img), expected)
