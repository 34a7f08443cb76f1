"""Evaluation: FD against an independent scipy computation, the classifier and its augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from unirae_pipeline.evaluation.classifier import ClassifierConfig, ShapeClassifier, augment, predict
from unirae_pipeline.evaluation.fd import feature_stats, frechet_distance
from unirae_pipeline.evaluation.report import image_grid, to_uint8_nhwc


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
    features, preds = predict(model, images, batch_size=3)
    assert features.shape == (7, 16) and preds.shape == (7,) and preds.max() < 5
    x = images.float() / 255
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(augment(flat, ClassifierConfig(8, 16, 2.0, 0.0)), flat, atol=1e-5)  # blur keeps flat images


def test_image_grid_layout():
    images = to_uint8_nhwc(torch.rand(6, 3, 4, 4))
    grid = image_grid(images, ncol=3, min_width=24)
    assert grid.size == (24, 16)  # 3 x 4 px wide, upscaled x2; 2 rows
