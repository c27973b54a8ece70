"""The six dermoscopic colours of the ABCD rule (white, red, light brown, dark brown, blue-gray,
black) found in a lesion, by the rule of Seidenari et al.: each lesion pixel is compared, in CIELAB,
with a reference colour per class and counts for the nearest one only when it lies within a
distance threshold; a colour is present when it covers at least a minimum share of the lesion.

Two steps come before the comparison (docs/artefacts-and-colours.md):
- specular highlights (near-clipped pixels) are left out: they are light on the surface, not colour
  of the lesion, and used to be counted as "white";
- the image is white-balanced on the skin around the lesion (von Kries gains in linear RGB that map
  its median to a reference skin colour), so a pink or purple cast of the camera does not turn
  light brown into red or blue-gray.

The reference colours, the distance and the minimum shares were set on the `tune` part of the
labelled set in tests/data/labelled (tools/tune_colour_rules.py); the `holdout` part is scored
apart by `python -m model.cli.label_agreement`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COLOUR_NAMES = ("white", "red", "light brown", "dark brown", "blue-gray", "black")


@dataclass(frozen=True)
class ColourRules:
    """Reference colours (CIELAB, D65, L 0-100), per colour the largest CIELAB distance (Delta E*ab) at
    which a pixel still counts for it when it is the nearest reference, and the smallest share of the
    lesion it must cover."""
    references: dict[str, tuple[float, float, float]]
    max_distance: dict[str, float]
    min_share: dict[str, float]
    skin_reference: tuple[float, float, float] = (70.0, 14.0, 14.0)   # sRGB about (205, 160, 140)
    specular_min: int = 230          # min(R, G, B) at or above this: a specular highlight
    skin_margin: float = 0.06        # skin is sampled this share of the image side away from the lesion
    lightness_balance: float = 0.0   # 0: balance the skin's colour only, 1: its lightness too (by gains)
    lightness_shift: bool = False    # then shift L so the skin's L is the reference skin's
    skin_absorbs: bool = True        # pixels nearest the reference skin count for no colour

    def __post_init__(self):
        if tuple(self.references) != COLOUR_NAMES or not set(COLOUR_NAMES) == set(self.min_share) == set(self.max_distance):
            raise ValueError(f"colour rules must name {COLOUR_NAMES} in that order")


RULES = ColourRules(   # tools/tune_colour_rules.py on the `tune` part of tests/data/labelled, 8 rounds
    references={"white": (85.0, 4.0, 8.0), "red": (50.0, 45.0, 14.0), "light brown": (58.0, 22.0, 34.0),
                "dark brown": (31.0, 19.0, 24.0), "blue-gray": (45.0, 6.0, -4.0), "black": (14.0, 0.0, 3.0)},
    max_distance={"white": 22.0, "red": 20.0, "light brown": 22.0, "dark brown": 22.0, "blue-gray": 22.0,
                  "black": 22.0},
    min_share={"white": 0.035, "red": 0.05, "light brown": 0.05, "dark brown": 0.05, "blue-gray": 0.05,
               "black": 0.05},
)


def _linear(srgb: np.ndarray) -> np.ndarray:
    c = srgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055).astype(np.float32)


def _lab_of_linear(lin: np.ndarray) -> np.ndarray:
    """(n, 3) linear RGB -> (n, 3) CIELAB (OpenCV's float conversion: L 0-100)."""
    return cv2.cvtColor(_srgb(lin).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)


def skin_balance(rgb: np.ndarray, mask: np.ndarray, rules: ColourRules = RULES) -> tuple[np.ndarray, float | None]:
    """Per-channel gains (linear RGB) that bring the median of the skin around the lesion to the
    reference skin colour; ones when too little skin is visible. Dark pixels (vignette, hair, ink)
    and specular ones are not skin."""
    h, w = mask.shape
    r = max(1, int(round(rules.skin_margin * max(h, w))))
    near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    skin = rgb[~near]
    if len(skin):
        grey = skin.astype(np.float32).mean(1)
        skin = skin[(grey > 60) & (skin.min(1) < rules.specular_min)]
    if len(skin) < 50:
        return np.ones(3, np.float32), None
    ref = cv2.cvtColor(np.array([[rules.skin_reference]], np.float32), cv2.COLOR_LAB2RGB).reshape(3)
    target, seen = _linear(np.clip(ref, 0, 1) * 255), np.maximum(_linear(np.median(skin, 0)), 1e-3)
    gains = target / seen
    luminance = np.array([0.2126, 0.7152, 0.0722], np.float32)   # Y of linear sRGB
    kept = (seen @ luminance) / (target @ luminance)                # gains that leave the skin's Y as it is
    gains = np.clip(gains * kept ** (1.0 - rules.lightness_balance), 0.4, 2.5).astype(np.float32)
    return gains, float(_lab_of_linear((seen * gains)[None])[0, 0])


def lesion_lab(rgb: np.ndarray, mask: np.ndarray, rules: ColourRules = RULES) -> np.ndarray:
    """CIELAB of the lesion's pixels after white balance on the skin, specular highlights left out."""
    pixels = rgb[np.asarray(mask, bool)]
    pixels = pixels[pixels.min(1) < rules.specular_min]
    if not len(pixels):
        return np.zeros((0, 3), np.float32)
    gains, skin_l = skin_balance(rgb, mask, rules)
    lab = _lab_of_linear(_linear(pixels) * gains)
    if rules.lightness_shift and skin_l is not None:
        lab[:, 0] += rules.skin_reference[0] - skin_l
    return lab


def colour_shares(lab: np.ndarray, rules: ColourRules = RULES) -> dict[str, float]:
    """Share of the pixels whose nearest reference colour is each colour, within max_distance."""
    if not len(lab):
        return {n: 0.0 for n in COLOUR_NAMES}
    refs = np.array(list(rules.references.values()) + [rules.skin_reference], np.float32)
    if not rules.skin_absorbs:
        refs = refs[:-1]
    d2 = ((lab[:, None, :] - refs[None]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    limit = np.array([rules.max_distance[n] for n in COLOUR_NAMES] + [np.inf], np.float32)[:len(refs)]
    close = d2[np.arange(len(lab)), nearest] <= limit[nearest] ** 2
    counts = np.bincount(nearest[close], minlength=len(refs))
    return {n: float(c / len(lab)) for n, c in zip(COLOUR_NAMES, counts)}


def lesion_colours(rgb: np.ndarray, mask: np.ndarray, rules: ColourRules = RULES) -> list[str]:
    """The dermoscopic colours present in the lesion, in COLOUR_NAMES order."""
    shares = colour_shares(lesion_lab(rgb, mask, rules), rules)
    return [n for n in COLOUR_NAMES if shares[n] >= rules.min_share[n]]
