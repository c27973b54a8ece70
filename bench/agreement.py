"""Do the fast and naive pipelines compute the same thing? Per image, then worst case."""
from __future__ import annotations

import numpy as np

PROB_TOL = 1e-4
CAM_MIN_CORR = 0.99
CAM_MAX_ABS_DIFF = 0.05       # accepted instead of the correlation when a map is (near) flat


def compare_outputs(fast, naive, input_hw) -> dict:
    """Probabilities, CAM class, each CAM, feature maps and masks of the fast and naive pipelines."""
    from bench.naive import eigencam_flipped

    out = {"prob_max_abs_diff": float(np.abs(fast.probabilities - naive.probabilities).max()),
           "same_cam_class": fast.cam_class == fast.classes[naive.cam_class], "cams": {}}
    for m, ours in fast.cams.items():
        ref = naive.cams[m]
        diff = float(np.abs(ours - ref).max())
        corr = _corr(ours, ref)
        row = {"corr": corr, "max_abs_diff": round(diff, 5)}
        if m == "eigencam" and not _cam_ok(corr, diff) and naive.eigencam_activations is not None:
            flipped = eigencam_flipped(naive.eigencam_activations, input_hw, ours.shape)
            fc, fd = _corr(ours, flipped), float(np.abs(ours - flipped).max())
            row.update(sign_flipped_corr=fc, sign_flipped_max_abs_diff=round(fd, 5))
            row["note"] = ("same up to the arbitrary sign of the SVD component" if _cam_ok(fc, fd)
                           else "disagrees even allowing for the SVD sign")
            row["ok"] = _cam_ok(fc, fd)
            row["corr_up_to_sign"] = fc if row["ok"] else corr
        else:
            row["ok"] = _cam_ok(corr, diff)
            row["corr_up_to_sign"] = corr
        out["cams"][m] = row
    if fast.feature_maps is not None and naive.feature_maps is not None:
        fm = fast.feature_maps
        out["feature_maps"] = {"same_channels": list(fm.channels) == list(naive.feature_channels),
                               "max_abs_diff": float(np.abs(fm.maps - naive.feature_maps).max())
                               if fm.maps.shape == naive.feature_maps.shape else None}
    if fast.lesion_mask is not None or naive.lesion_mask is not None:
        same = (fast.lesion_mask is not None and naive.lesion_mask is not None
                and fast.lesion_mask.shape == naive.lesion_mask.shape
                and bool((fast.lesion_mask == naive.lesion_mask).all()))
        out["masks_identical"] = same
        if not same and fast.lesion_mask is not None and naive.lesion_mask is not None:
            out["mask_pixels_different"] = int((fast.lesion_mask != naive.lesion_mask).sum())
    fm_ok = out.get("feature_maps", {}).get("same_channels", True) and \
        (out.get("feature_maps", {}).get("max_abs_diff") or 0) < 1e-3
    out["ok"] = bool(out["prob_max_abs_diff"] <= PROB_TOL and out["same_cam_class"] and fm_ok
                     and all(r["ok"] for r in out["cams"].values()) and out.get("masks_identical", True))
    return out


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 6)


def _cam_ok(corr, diff) -> bool:
    return (corr is not None and corr > CAM_MIN_CORR) or diff < CAM_MAX_ABS_DIFF


def merge_agreement(rows: list[dict]) -> dict:
    """Worst case over all compared images."""
    if not rows:
        return {"n_images": 0, "ok": None}
    methods = rows[0]["cams"].keys()
    cams = {}
    for m in methods:
        rs = [r["cams"][m] for r in rows]
        corrs = [r["corr"] for r in rs if r["corr"] is not None]
        up = [r["corr_up_to_sign"] for r in rs if r.get("corr_up_to_sign") is not None]
        cams[m] = {"min_corr": min(corrs) if corrs else None, "min_corr_up_to_sign": min(up) if up else None,
                   "max_abs_diff": max(r["max_abs_diff"] for r in rs), "ok": all(r["ok"] for r in rs)}
        notes = sorted({r["note"] for r in rs if "note" in r})
        if notes:
            cams[m]["notes"] = notes
    out = {"n_images": len(rows), "prob_max_abs_diff": max(r["prob_max_abs_diff"] for r in rows),
           "prob_tolerance": PROB_TOL, "same_cam_class": all(r["same_cam_class"] for r in rows),
           "cams": cams, "cam_criterion": f"corr > {CAM_MIN_CORR} or max |diff| < {CAM_MAX_ABS_DIFF}"}
    if any("masks_identical" in r for r in rows):
        out["masks_identical"] = all(r.get("masks_identical", False) for r in rows)
        diffs = [r.get("mask_pixels_different", 0) for r in rows]
        if any(diffs):
            out["mask_pixels_different_max"] = max(diffs)
    if any("feature_maps" in r for r in rows):
        out["feature_maps"] = {"same_channels": all(r["feature_maps"]["same_channels"] for r in rows),
                               "max_abs_diff": max((r["feature_maps"]["max_abs_diff"] or 0) for r in rows)}
    out["ok"] = all(r["ok"] for r in rows)
    return out
