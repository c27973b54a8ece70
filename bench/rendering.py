"""Rendering as the Analyse page does it, so the benchmark charges drawing to the total."""
from __future__ import annotations

import numpy as np


def render_functions():
    """The app's own helpers (app/widgets/components.py) when importable, else equivalent OpenCV code."""
    try:
        from app.widgets.components import colorize, feature_tiles, heatmap_overlay, outline_image
        return heatmap_overlay, outline_image, colorize, feature_tiles, "app.widgets.components"
    except Exception:  # noqa: BLE001 - the app may be absent or mid-edit; fall back
        import cv2

        def heatmap_overlay(rgb, heat, opacity=0.5):
            heat = np.clip(np.asarray(heat, np.float32), 0, 1)
            if heat.shape != rgb.shape[:2]:
                heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
            colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            return np.uint8(np.clip((1 - opacity) * rgb.astype(np.float32) + opacity * colour, 0, 255))

        def outline_image(rgb, mask):
            out = np.ascontiguousarray(rgb.copy())
            if mask is not None and mask.any():
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                t = max(2, round(max(rgb.shape[:2]) / 250))
                cv2.drawContours(out, contours, -1, (0, 0, 0), t + 2, lineType=cv2.LINE_AA)
                cv2.drawContours(out, contours, -1, (0, 230, 118), t, lineType=cv2.LINE_AA)
            return out

        def colorize(values, size_hw=None):
            v = np.uint8(255 * np.clip(np.asarray(values, np.float32), 0, 1))
            if size_hw is not None:
                v = cv2.resize(v, (int(size_hw[1]), int(size_hw[0])), interpolation=cv2.INTER_NEAREST)
            return cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)

        def feature_tiles(maps, channels, means, tile=120):
            tiles = []
            for m in maps:
                s = tile / max(m.shape)
                tiles.append(colorize(m, (max(1, round(m.shape[0] * s)), max(1, round(m.shape[1] * s)))))
            return tiles, [f"channel {c}" for c in channels]

        return heatmap_overlay, outline_image, colorize, feature_tiles, "bench fallback (OpenCV)"


def render(fns, image, cams: dict, mask, fmaps=None, channels=(), means=()) -> int:
    """What the Analyse page draws (app/analyse/sections.py): every CAM colourised and blended over
    the image, the lesion outline, the feature-map tiles, and the first feature map enlarged on its
    own and over the image. Returns the number of pixel values produced (keeps the work honest)."""
    heatmap_overlay, outline_image, colorize, feature_tiles = fns[:4]
    n = 0
    for cam in cams.values():
        n += heatmap_overlay(image, cam, 0.5).size
    if mask is not None:
        n += outline_image(image, mask).size
    if fmaps is not None and len(fmaps):
        tiles, _ = feature_tiles(fmaps, list(channels), list(means) or [0.0] * len(fmaps))
        n += sum(t.size for t in tiles)
        n += colorize(fmaps[0], image.shape[:2]).size + heatmap_overlay(image, fmaps[0], 0.5).size
    return n
