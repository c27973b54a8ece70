"""Image quality and out-of-distribution signals (numpy/OpenCV; thresholds come from the bundle)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from model.data.preprocess import resize_rgb

MIN_SIDE = 64  # below this an image carries too little detail for dermoscopy


def sharpness(rgb: np.ndarray, size_hw: Sequence[int]) -> float:
    """Variance of the Laplacian at the model's input size (low = blurred)."""
    gray = cv2.cvtColor(resize_rgb(rgb, size_hw), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each feature row to the training distribution.

    The product with the (D x D) precision avoids numpy's threaded BLAS, which stalls on busy
    cores (1280 features, 2 cores with one busy: 1 row 4.6 ms, 32 rows 47 ms): einsum's own loop
    for a few rows (0.3 ms), torch's matmul for more (32 rows 4 ms); the same to 1e-15."""
    d = np.asarray(features, np.float64) - mean
    if d.shape[1] <= 64:
        dp = d @ precision
    elif len(d) <= 4:
        dp = np.einsum("nj,jk->nk", d, precision)
    else:
        import torch

        dp = (torch.from_numpy(np.ascontiguousarray(d))
              @ torch.from_numpy(np.ascontiguousarray(precision, np.float64))).numpy()
    return np.sqrt(np.maximum((dp * d).sum(axis=1), 0))


def fit_gaussian(features: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (shrunk, well-conditioned) inverse covariance of training features."""
    f = np.asarray(features, np.float64)
    mean = f.mean(axis=0)
    cov = np.cov(f - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(mean)) * np.trace(cov) / len(mean)
    return mean, np.linalg.inv(cov)


def colour_features(rgb: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Mean and spread of CIELAB lightness and the two colour axes at the model's input size:
    six numbers that separate skin seen through a dermatoscope from text, screenshots, noise..."""
    lab = cv2.cvtColor(resize_rgb(rgb, size_hw).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mean, std = cv2.meanStdDev(lab)  # one pass in C; the same figures as numpy's mean/std
    return np.concatenate([mean.ravel(), std.ravel()]).astype(np.float64)


def colour_reference(train_rgbs, val_rgbs, size_hw: Sequence[int], percentile: float = 99.0) -> dict:
    """Gaussian of the training images' colour features and the distance that `percentile` % of
    validation images stay under (stored in a classifier bundle's meta.json)."""
    train = np.stack([colour_features(im, size_hw) for im in train_rgbs])
    val = np.stack([colour_features(im, size_hw) for im in val_rgbs])
    mean, precision = fit_gaussian(train, shrinkage=0.01)
    return {"colour_mean": mean.round(5).tolist(), "colour_precision": precision.round(6).tolist(),
            "colour_threshold": float(np.percentile(mahalanobis(val, mean, precision), percentile)),
            "colour_reference": f"{percentile:g}th percentile of validation colour distance to training images"}
