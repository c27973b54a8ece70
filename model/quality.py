"""Image quality and out-of-distribution signals (numpy/OpenCV; thresholds come from the bundle)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .preprocess import resize_rgb

MIN_SIDE = 64  # below this an image carries too little detail for dermoscopy


def sharpness(rgb: np.ndarray, size_hw: Sequence[int]) -> float:
    """Variance of the Laplacian at the model's input size (low = blurred)."""
    gray = cv2.cvtColor(resize_rgb(rgb, size_hw), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each feature row to the training distribution."""
    d = np.asarray(features, np.float64) - mean
    return np.sqrt(np.maximum(((d @ precision) * d).sum(axis=1), 0))


def fit_gaussian(features: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (shrunk, well-conditioned) inverse covariance of training features."""
    f = np.asarray(features, np.float64)
    mean = f.mean(axis=0)
    cov = np.cov(f - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(mean)) * np.trace(cov) / len(mean)
    return mean, np.linalg.inv(cov)
