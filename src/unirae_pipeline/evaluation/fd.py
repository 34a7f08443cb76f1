"""Fréchet distance between Gaussian fits of features (the FID formula in any feature space)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric


def feature_stats(features: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """mu and the unbiased covariance (float64), as torch-fidelity and the ADM evaluator compute them."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need a (N >= 2, D) feature matrix, got shape {f.shape}")
    return {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}


def frechet_distance(stats_a: dict[str, np.ndarray], stats_b: dict[str, np.ndarray]) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), computed by torch-fidelity."""
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])
