"""Fréchet distance between Gaussian fits of features (the FID formula in any feature space)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torchmetrics.functional.image import structural_similarity_index_measure


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


def load_reference(path: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """mu/sigma from a reference npz, and its images (uint8 NHWC, `arr_0`) when present: the ADM evaluator's
    reference batches carry 10k images for precision/recall next to the train-set statistics."""
    with np.load(path) as npz:
        if "mu" not in npz or "sigma" not in npz:
            raise KeyError(f"fid.reference_npz {path!r} has no 'mu'/'sigma' arrays (keys: {list(npz.keys())})")
        stats = {"mu": npz["mu"].astype(np.float64), "sigma": npz["sigma"].astype(np.float64)}
        return stats, (npz["arr_0"] if "arr_0" in npz else None)


def precision_recall(generated: torch.Tensor, real: torch.Tensor, neighborhood: int = 3) -> dict[str, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019, k = 3) in feature space, computed by torch-fidelity."""
    out = prc_features_to_metric(torch.as_tensor(generated).float(), torch.as_tensor(real).float(),
                                 prc_neighborhood=neighborhood, save_cpu_ram=True, verbose=False)
    return {"precision": float(out[KEY_METRIC_PRECISION]), "recall": float(out[KEY_METRIC_RECALL])}


def psnr_ssim(recon: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR (MSE clamped at 1e-10) and SSIM (Gaussian 11x11, sigma 1.5) of uint8 (N, 3, H, W) images
    read as [0, 1], as the reference's `src/eval` scores its saved reconstructions."""
    if recon.dtype != torch.uint8 or target.dtype != torch.uint8:
        raise TypeError(f"psnr_ssim scores uint8 images, got {recon.dtype} and {target.dtype}")
    recon, target = recon.float() / 255, target.float() / 255
    mse = ((recon - target) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    ssim = structural_similarity_index_measure(recon, target, data_range=1.0)
    return {"psnr": float((10 * torch.log10(1 / mse)).mean()), "ssim": float(ssim)}
