"""The quality gate: whether an image is one the classifier can be trusted on.

Judged from the pixels at the classifier's input (sharpness, colour statistics, grayscale), the
size as uploaded, the pre-logit features (Mahalanobis distance to the training images) and,
once there is one, the lesion mask. Every reference comes from the bundle's meta.json and
extras, fitted by train.py on the training and validation images."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from model.data.pixels import is_grayscale
from model.data.preprocess import model_rgb
from model.inference.quality import MIN_SIDE, colour_features, mahalanobis, sharpness
from model.nets.bundle import Bundle

MIN_LESION_PCT = 0.5             # a mask smaller than this share of the image counts as no lesion


class PixelChecks(NamedTuple):
    sharpness: float | None
    colour_distance: float | None
    grayscale: bool


class Checks(NamedTuple):
    """The checks that need no lesion mask."""
    warnings: list[str]
    grayscale: bool
    short: bool


class QualityGate:
    """One classifier's gate; holds only its references, so one gate serves many threads."""

    def __init__(self, classifier: Bundle):
        self.classifier = classifier
        q = classifier.meta.get("quality", {})
        self.ood_threshold = q.get("ood_threshold")
        self.sharpness_floor = q.get("sharpness_p01")
        self.colour = (np.asarray(q["colour_mean"]), np.asarray(q["colour_precision"]), float(q["colour_threshold"])) \
            if {"colour_mean", "colour_precision", "colour_threshold"} <= q.keys() else None
        ex = classifier.extras
        self.ood = (ex["ood_mean"].double().numpy(), ex["ood_precision"].double().numpy()) \
            if "ood_mean" in ex and "ood_precision" in ex else None

    def ood_distances(self, features: np.ndarray) -> np.ndarray | None:
        """Mahalanobis distances of pre-logit features (N x D) to the training images, or None."""
        return mahalanobis(features, *self.ood) if self.ood else None

    def pixel_checks(self, small: np.ndarray) -> PixelChecks:
        """Sharpness, colour distance and grayscale of the image at the classifier's input."""
        size = self.classifier.input_size
        sharp = sharpness(small, size) if self.sharpness_floor is not None else None
        colour = None
        if self.colour is not None:
            mean, precision, _ = self.colour
            colour = float(mahalanobis(colour_features(small, size)[None], mean, precision)[0])
        return PixelChecks(sharp, colour, is_grayscale(small))

    def image_checks(self, rgb, original, ood_distance=None, short=False, pixels: PixelChecks | None = None) -> Checks:
        """The checks that need no lesion mask; `short` words them for a table cell."""
        if pixels is None:
            pixels = self.pixel_checks(model_rgb(rgb, self.classifier.input_size, self.classifier.domain))
        w = []
        if min(original) < MIN_SIDE:
            w.append("tiny image" if short else f"The image is only {original[1]}x{original[0]} pixels as uploaded "
                     f"(a side under {MIN_SIDE}): too small for a dermoscopic assessment.")
        if pixels.sharpness is not None and pixels.sharpness < self.sharpness_floor:
            w.append("blurred" if short else f"The image looks blurred (sharpness {pixels.sharpness:.0f}, below 99% "
                     f"of training images' {self.sharpness_floor:.0f}).")
        if ood_distance is not None and self.ood_threshold is not None and ood_distance > self.ood_threshold:
            w.append("unlike training images" if short else "The image is unlike the dermoscopy images the model "
                     f"was trained on (feature distance {ood_distance:.0f} > {self.ood_threshold:.0f}, a limit "
                     "that about 1% of validation images exceed). It may not be a dermoscopic image.")
        if pixels.colour_distance is not None and pixels.colour_distance > self.colour[2]:
            w.append("colours unlike dermoscopy" if short else "The image's colours are unlike the dermoscopy "
                     f"images the model was trained on (colour distance {pixels.colour_distance:.1f} > "
                     f"{self.colour[2]:.1f}, a limit that about 1% of validation images exceed). It may not be a "
                     "dermoscopic image, or it comes from another dermatoscope or light.")
        return Checks(w, pixels.grayscale, short)

    @staticmethod
    def with_mask_checks(checks: Checks, mask) -> list[str]:
        """image_checks' warnings plus the lesion check, grayscale last (the order the page shows)."""
        w = list(checks.warnings)
        if mask is not None and 100 * mask.mean() < MIN_LESION_PCT:
            w.append("no lesion found" if checks.short else "The segmenter found no lesion in this image.")
        if checks.grayscale:
            w.append("grayscale" if checks.short else "Grayscale image: the model was trained on colour dermoscopy.")
        return w
