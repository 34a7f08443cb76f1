"""Fréchet distance between Gaussian fits of features (the FID formula in any feature space)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric


def feature_stats(features: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """mu and the unbiased covariance (float64), as torch-fidelity and the ADM evaluator compute them."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need a (N >= 2, D) feature matrix, got shape {f.shape}")
    return {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}


def frechet_distance(stats_a: dict[str, np.ndarray], stats_b: dict[str, np.ndarray]) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), computed by torch-fidelity."""
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


def inception_score(logits: torch.Tensor, splits: int = 10) -> float:
    """IS from Inception's unbiased logits (torch-fidelity's computation: 10 splits, fixed shuffle)."""
    return float(isc_features_to_metric(logits, splits=splits)[KEY_METRIC_ISC_MEAN])


def load_reference(path: str) -> dict[str, np.ndarray]:
    """mu/sigma from a reference npz (the ADM evaluator's batches carry them next to the images)."""
    with np.load(path) as npz:
        if "mu" not in npz or "sigma" not in npz:
            raise KeyError(f"fid.reference_npz {path!r} has no 'mu'/'sigma' arrays (keys: {list(npz.keys())})")
        return {"mu": npz["mu"].astype(np.float64), "sigma": npz["sigma"].astype(np.float64)}
