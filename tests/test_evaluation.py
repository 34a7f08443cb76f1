"""Evaluation: FD against an independent scipy computation, the classifier and its augmentation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import torch
import yaml

from unirae_pipeline.evaluation.classifier import (
    ClassifierConfig,
    ShapeClassifier,
    augment,
    classifier_file,
    classifier_from_file,
)
from unirae_pipeline.evaluation.extractors import Extractor
from unirae_pipeline.evaluation.fd import feature_stats, frechet_distance


def scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fd_matches_scipy_on_fixed_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    b = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 1.0
    assert frechet_distance(feature_stats(a), feature_stats(b)) == pytest.approx(scipy_fd(a, b), rel=1e-6)
    assert frechet_distance(feature_stats(a), feature_stats(a)) == pytest.approx(0, abs=1e-8)


def test_fd_of_known_gaussians():
    # Two isotropic Gaussians: FD = |mu1 - mu2|^2 + d (s1 - s2)^2
    stats_a = {"mu": np.zeros(4), "sigma": np.eye(4) * 4.0}
    stats_b = {"mu": np.ones(4), "sigma": np.eye(4)}
    assert frechet_distance(stats_a, stats_b) == pytest.approx(4 + 4 * (2 - 1) ** 2)


def test_feature_stats_rejects_too_few_samples():
    with pytest.raises(ValueError, match="feature matrix"):
        feature_stats(np.zeros((1, 3)))


def test_classifier_features_predictions_and_augment():
    cfg = ClassifierConfig(width=8, feature_dim=16, blur_sigma=1.0, noise_std=0.1)
    model = ShapeClassifier(cfg, num_classes=5)
    images = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8)
    file = classifier_file(model)
    assert classifier_from_file(file).num_classes == 5 and classifier_from_file(file).cfg == cfg
    features, logits = Extractor(file, batch_size=3)(images)
    assert features.shape == (7, 16) and logits.shape == (7, 5)
    assert torch.allclose(features.float(), model.features(images.float() / 255), atol=1e-6)
    x = images.float() / 255
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(augment(flat, ClassifierConfig(8, 16, 2.0, 0.0)), flat, atol=1e-5)  # blur keeps flat images


def test_grids_label_their_rows_on_the_picture_and_in_the_png(tmp_path):
    """Cells upscaled and parted by gutters, a label left of each row (drawn: dark pixels in the margin), the labels
    kept through a PNG written by the catalog's dataset; a label count that does not match is an error."""
    from unirae_pipeline.evaluation.report import GUTTER, grid_labels, labelled_grid
    from unirae_pipeline.io.datasets import PNGDataset

    images = np.full((6, 4, 4, 3), 128, dtype=np.uint8)
    grid = labelled_grid(images, ncol=3, rows=["0 circle", "1 cross"], min_width=24)
    margin = grid.size[0] - 3 * (8 + GUTTER)
    assert grid.size[1] == 2 * (8 + GUTTER) and margin > 8  # cells 4 px x2, a gutter after each
    pixels = np.asarray(grid)
    assert (pixels[:, :margin] < 100).any() and (pixels[:8, margin:margin + 8] == 128).all()
    assert (pixels[:8, margin + 8:margin + 8 + GUTTER] == 255).all()  # the gutter between two cells
    PNGDataset(filepath=str(tmp_path / "grid.png")).save(grid)
    assert grid_labels(PNGDataset(filepath=str(tmp_path / "grid.png")).load()) == ["0 circle", "1 cross"]
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        labelled_grid(images, ncol=3, rows=["one"])


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised network of Inception-v3-compat's architecture, saved as a weights file."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fi

    with mock.patch.object(fi, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(fi.FeatureExtractorInceptionV3, "load_state_dict"):
        net = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    state.update({k: torch.ones_like(v) for k, v in state.items() if k.endswith("running_var")})
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(state, path)
    return path


@pytest.mark.slow  # the real-size Inception-v3
def test_inception_extractor_from_a_weights_file(inception_file):
    from unirae_pipeline.evaluation.fd import inception_score
    from unirae_pipeline.interop.fid_weights import inception_file as read_inception

    file = read_inception(str(inception_file))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    features, logits = Extractor(file, batch_size=4)(images)
    assert features.shape == (6, 2048) and logits.shape == (6, 1008)
    again, _ = Extractor(file)(images)
    assert torch.allclose(features, again)  # deterministic, eval mode
    assert 1.0 <= inception_score(logits, splits=2) <= 1008


def _fid(extractor: str, **over):
    """The `fid` group as the nodes take it: the committed one with a smaller classifier and these values."""
    from .conftest import ROOT, typed

    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["fid"]
    clf = {"width": 8, "feature_dim": 8, "blur_sigma": 1.0, "noise_std": 0.1}
    return typed("fid", {**committed, "extractor": extractor, "classifier": clf, **over})


def test_fid_config_errors_name_the_keys(tmp_path, inception_file):
    from unirae_pipeline.interop.fid_weights import inception_file as read_inception

    with pytest.raises(FileNotFoundError, match="fid.inception_weights"):
        _fid("inception", inception_weights=str(tmp_path / "missing.pth")).check_environment()
    with pytest.raises(FileNotFoundError, match="fid.dinov2_weights"):
        _fid("dinov2").check_environment()
    with pytest.raises(FileNotFoundError, match="fid.reference_npz"):
        _fid("classifier", reference_npz=str(tmp_path / "missing.npz")).check_environment()
    with pytest.raises(ValueError, match="fid.extractor"):
        _fid("clip")
    with pytest.raises(ValueError, match="fid.dinov2_model"):
        _fid("classifier", dinov2_model="dinov7")
    _fid("inception", inception_weights=str(inception_file))
    (tmp_path / "evil.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        read_inception(str(tmp_path / "evil.pth"))


@pytest.mark.slow  # a real-size DINOv2 ViT
def test_fd_dinov2_extractor_from_a_torch_hub_layout_file(tmp_path):
    """A random DINOv2 (ViT-S/14 here; ViT-L/14 for FD-DINOv2) saved as torch hub saves it: 518 px positions and a
    mask token. It loads at 224 px and gives the normed CLS token, through the fid_reference node."""
    import timm
    from timm.layers import resample_abs_pos_embed

    from unirae_pipeline.evaluation.extractors import DINOv2Features
    from unirae_pipeline.pipelines.fid_reference.nodes import build_feature_extractor

    torch.manual_seed(0)
    hub = timm.create_model("vit_small_patch14_dinov2", num_classes=0).state_dict()  # 518 px: 37 x 37 positions
    assert hub["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    torch.save({**hub, "mask_token": torch.zeros(1, 384)}, tmp_path / "dinov2.pth")
    fid = _fid("dinov2", dinov2_weights=str(tmp_path / "dinov2.pth"), dinov2_model="vit_small_patch14_dinov2")
    file, curve = build_feature_extractor(None, 16, fid, None, 0, None)  # no training: no trainer or runtime
    assert curve.empty and "mask_token" not in file.tensors
    expected = resample_abs_pos_embed(hub["pos_embed"], new_size=(16, 16), num_prefix_tokens=1)
    torch.testing.assert_close(file.tensors["pos_embed"], expected)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    features, logits = Extractor(file, batch_size=2)(images)
    assert features.shape == (5, 384) and logits.shape == (5, 0)
    net = DINOv2Features("vit_small_patch14_dinov2", file.tensors)
    x = torch.nn.functional.interpolate(images.float() / 255, size=(224, 224), mode="bicubic", antialias=True)
    tokens = net.vit.forward_features((x.clamp(0, 1) - net.mean) / net.std)
    torch.testing.assert_close(features.float(), tokens[:, 0], rtol=1e-4, atol=1e-5)  # the normed CLS token

    # a reference npz (mu/sigma + arr_0 images, the ADM layout) for generation; val statistics for rFID regardless
    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.pipelines.fid_reference.nodes import reference_statistics

    from .conftest import scratch, write_folder

    image_set = scan_image_folder(write_folder(tmp_path / "imgs", {"a": 3, "b": 3}))
    mu, sigma = np.full(384, 0.5), np.eye(384)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma, arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    cache = scratch(tmp_path / "scratch")
    stats, metrics = reference_statistics(file, image_set, 16, replace(fid, reference_npz=str(tmp_path / "ref.npz")),
                                          cache)
    assert np.array_equal(stats["mu"], mu) and stats["features"].shape == (4, 384)
    assert stats["val_mu"].shape == (384,) and not np.allclose(stats["val_mu"], mu) and metrics["num_val"] == 6
    in_workers, _ = reference_statistics(file, image_set, 16, replace(fid, reference_npz=None),
                                         replace(cache, num_workers=2))  # val decoded in `runtime.num_workers`
    assert np.array_equal(in_workers["val_mu"], stats["val_mu"]) and np.array_equal(in_workers["mu"], stats["val_mu"])
    np.savez(tmp_path / "inception.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="2048-d statistics"):
        reference_statistics(file, image_set, 16, replace(fid, reference_npz=str(tmp_path / "inception.npz")), cache)


def test_a_batch_larger_than_an_image_folder_names_its_key(tmp_path, params):
    """An ImageFolder's size is known only once indexed: the stage that trains on it names the params key."""
    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.pipelines.fid_reference.nodes import build_feature_extractor

    from .conftest import runtime, typed, write_folder

    image_set = scan_image_folder(write_folder(tmp_path / "imgs", {"a": 3, "b": 3}))
    fixed = _fid("classifier", train={**params["fid"]["train"], "fit_batch": False})
    with pytest.raises(ValueError, match="fid.train.batch_size 128 exceeds the data set size 6"):
        build_feature_extractor(image_set, 16, fixed, typed("trainer", params["trainer"]), 0, runtime())


def test_reference_npz_in_the_adm_layout(tmp_path):
    from unirae_pipeline.evaluation.fd import load_reference

    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=mu, sigma=sigma)
    ref, images = load_reference(str(tmp_path / "ref.npz"))
    assert np.array_equal(ref["mu"], mu) and np.array_equal(ref["sigma"], sigma) and images.shape == (2, 4, 4, 3)
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(1))
    with pytest.raises(KeyError, match="mu"):
        load_reference(str(tmp_path / "bad.npz"))


def test_precision_recall_of_matching_and_disjoint_sets():
    from unirae_pipeline.evaluation.fd import precision_recall

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=gen)
    same = precision_recall(torch.randn(400, 8, generator=gen), real)
    far = precision_recall(torch.randn(400, 8, generator=gen) + 50, real)
    collapsed = precision_recall(real[:1] + 0.01 * torch.randn(50, 8, generator=gen), real)  # one mode
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert far["precision"] == 0 and far["recall"] == 0
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.5  # mode collapse: precise, no coverage


def test_precision_recall_need_enough_images(caplog):
    """Precision/recall on a few hundred points are k-NN manifolds that cover nearly everything (1.0 for a trained and
    an untrained model of a 200-image folder): below 500 samples or reference images they are left out, with a
    warning, and kept from 500."""
    from unirae_pipeline.evaluation.scoring import Features, sample_scores

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=gen)
    reference = {**feature_stats(real.numpy()), "features": real.numpy()}

    def scores(n: int) -> dict:
        found = Features(torch.randn(n, 8, generator=gen), torch.zeros(n, 0), torch.zeros(n, dtype=torch.long))
        return sample_scores(found, "dinov2", reference)

    assert {"precision", "recall"} <= set(scores(500))
    assert set(scores(200)) == {"fd"} and "too few images (200 < 500)" in caplog.text


def test_psnr_and_ssim():
    from unirae_pipeline.evaluation.fd import psnr_ssim

    target = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    perfect = psnr_ssim(target, target)
    assert perfect["psnr"] == pytest.approx(100.0) and perfect["ssim"] == pytest.approx(1.0)
    noisy = psnr_ssim((target.float() + 25).clamp(0, 255).to(torch.uint8), target)  # ~0.1 of the range
    assert 15 < noisy["psnr"] < 25 and noisy["ssim"] < 1.0
