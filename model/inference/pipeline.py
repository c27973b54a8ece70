"""The one inference entry point: an image in, everything the app shows out.

    analyzer = Analyzer.from_dir("assets/models")
    result = analyzer.analyze(image_bytes_or_rgb, cam_class="mel", cam_methods=("gradcam", "eigencam"))

One forward pass gives probabilities, pre-logit features (out-of-distribution check), CAM
activations and gradients and the chosen layer's feature maps; TTA views go in one extra
batched pass. Nothing is registered on the shared models, so one Analyzer serves many threads.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model.nets.bundle import Bundle, BundleError, load_bundle
from model.aids.case_aids import CaseAids
from model.explain.cam_forward import LastStageCam
from model.nets.engine import engine_for
from model.nets.classifier import feature_layers
from model.explain.cams import CAM_METHODS, cam_at, forward_explain, scale_cam
from model.labels import display_name, is_malignant
from model.nets.lanes import lanes_pool, submit_or_run
from model.inference.measurements import attention_shares, measure_lesion
from model.aids.melanoma_flag import flag_config, is_flagged
from model.data.pixels import is_grayscale
from model.data.preprocess import ImageError, decode_with_size, model_rgb, normalize_hwc, resize_map, resize_rgb
from model.inference.quality import MIN_SIDE, colour_features, mahalanobis, sharpness
from model.inference.results import Analysis, BatchPrediction, FeatureMaps
from model.nets.segmenter import postprocess_mask

MAX_WORKING_SIDE = 1024          # larger uploads are analysed (and displayed) at this size
LOW_CONFIDENCE_PROB = 0.5        # top-class probability under this is flagged
HIGH_ENTROPY = 0.6               # normalised entropy over this is flagged
MIN_LESION_PCT = 0.5             # a mask smaller than this share of the image counts as no lesion
ATTENTION_WARNING = 0.5          # heat share on the lesion under this gets a warning


def _entropy(p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1)
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def _working_image(source, notes: list[str], say: bool = True) -> tuple[np.ndarray, tuple[int, int], float]:
    """(RGB uint8 at the working size, upright (h, w) as uploaded, uploaded / working length).

    Files are decoded with a size hint (JPEG at 1/2-1/8 scale, other formats box-reduced as soon
    as they are decoded), so a large upload is never held at full size beyond its own decoding;
    arrays are taken as they are. Both are then downscaled to MAX_WORKING_SIDE."""
    if isinstance(source, np.ndarray):
        rgb, original = source, source.shape[:2]
    else:
        rgb, original = decode_with_size(source, notes, max_side=MAX_WORKING_SIDE)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError("Expected an RGB uint8 image.")
    scale = max(original) / MAX_WORKING_SIDE
    if scale <= 1:
        return rgb, tuple(original), 1.0
    h, w = (max(1, round(s / scale)) for s in original)
    if say:
        notes.append(f"Analysed at {w}x{h} (downscaled by {scale:.2f}).")
    return resize_rgb(rgb, (h, w)), tuple(original), scale


def _flip_views(x: torch.Tensor) -> torch.Tensor:
    """The three flipped copies of an Nx3xHxW batch (TTA views besides the original), stacked
    view by view: rows [0, N) are the horizontal flips, then vertical, then both."""
    return torch.cat([x.flip(3), x.flip(2), x.flip(2, 3)])


class Analyzer:
    """Holds a classifier bundle (and optionally a segmenter bundle) and analyses images."""

    def __init__(self, classifier: Bundle, segmenter: Bundle | None = None, engine: str | None = None):
        if classifier.task != "classify":
            raise BundleError(f"{classifier.path} is a {classifier.task} bundle, not a classifier.")
        if segmenter is not None and segmenter.task != "segment":
            raise BundleError(f"{segmenter.path} is a {segmenter.task} bundle, not a segmenter.")
        self.classifier = classifier
        self.segmenter = segmenter
        self.layers = feature_layers(classifier.model)
        self.engine = engine_for(classifier, engine)  # forward-only passes (model.nets.engine; None: DERMO_ENGINE)
        self.seg_engine = engine_for(segmenter, engine) if segmenter is not None else None
        self.last_cam = LastStageCam(classifier.model, classifier.input_size)
        self.flag = flag_config(classifier.meta)
        q = classifier.meta.get("quality", {})
        self.ood_threshold = q.get("ood_threshold")
        self.sharpness_floor = q.get("sharpness_p01")
        self._colour = (np.asarray(q["colour_mean"]), np.asarray(q["colour_precision"]), float(q["colour_threshold"])) \
            if {"colour_mean", "colour_precision", "colour_threshold"} <= q.keys() else None
        ex = classifier.extras
        self._ood = (ex["ood_mean"].double().numpy(), ex["ood_precision"].double().numpy()) \
            if "ood_mean" in ex and "ood_precision" in ex else None
        self.aids = CaseAids.from_bundle(classifier)   # similar cases and conformal sets (each may be absent)

    @classmethod
    def from_dir(cls, models_dir: str | Path, device: str = "auto", engine: str | None = None) -> "Analyzer":
        """Load `classifier/` and (if present) `segmenter/` bundles from a models folder."""
        from model.training.loop import pick_device

        models_dir = Path(models_dir)
        dev = pick_device(device)
        if not (models_dir / "classifier" / "meta.json").is_file():
            raise BundleError(f"No classifier bundle in {models_dir / 'classifier'}. Train one with "
                              "`python train.py classify --data DIR --out assets/models/classifier`.")
        seg_dir = models_dir / "segmenter"
        segmenter = load_bundle(seg_dir, dev) if (seg_dir / "meta.json").is_file() else None
        return cls(load_bundle(models_dir / "classifier", dev), segmenter, engine)

    # ------------------------------------------------------------------ public
    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    @property
    def device(self) -> torch.device:
        return next(self.classifier.model.parameters()).device

    def model_info(self) -> dict[str, str]:
        info = {"classifier": self.classifier.version}
        if self.segmenter is not None:
            info["segmenter"] = self.segmenter.version
        return info

    def analyze(self, source, *, cam_class: str | None = None, cam_layer: str | None = None,
                cam_methods: Sequence[str] = ("gradcam",), tta: bool = False,
                feature_layer: str | None = None, n_feature_maps: int = 16, segment: bool = True) -> Analysis:
        """Analyse one image (file bytes, a path or an RGB uint8 array). Raises ImageError for bad input."""
        t, parallel, runtime = {}, {}, {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            t[name] = round(t.get(name, 0.0) + (now - clock) * 1000, 2)   # a second lap of a stage adds
            clock = now

        notes: list[str] = []
        rgb, original, scale = _working_image(source, notes)
        bundle = self.classifier
        small = model_rgb(rgb, bundle.input_size, bundle.domain)
        x = torch.from_numpy(normalize_hwc(small, bundle.mean, bundle.std)[None]).to(self.device)
        lap("decode_resize")

        layer_idx = self.layers.index(cam_layer) if cam_layer else len(self.layers) - 1
        cls_idx = self.classes.index(cam_class) if cam_class else None
        feat_idx = self.layers.index(feature_layer) if feature_layer else None
        unknown = [m for m in cam_methods if m not in CAM_METHODS]
        if unknown:
            raise ValueError(f"unknown CAM methods {unknown}")
        last = len(self.layers) - 1
        lean = self.engine.kind != "torch" and self.last_cam.supported and layer_idx == last
        last_view = seg_job = similar_job = None
        lanes = getattr(self.engine, "lanes", 1)
        pool = lanes_pool(lanes) if lean else None
        if pool is not None:
            # a helper lane takes segmentation + measurements, the last flipped view, the pixel checks and
            # (once there are features) the similar cases, while this thread runs the original with the other
            # two views and explains it; whatever no helper has started when it is needed runs here
            # (docs/inference-engine.md)
            if segment and self.segmenter is not None:
                seg_job = self._start_segment(rgb, scale, parallel)
            if tta:
                last_view = submit_or_run(pool, lambda: self.engine(x.flip(2, 3), ["logits"])["logits"])
        pixels = submit_or_run(pool, lambda: self._pixel_checks(small))
        views = None
        if lean:
            wanted = ["logits", "features", f"stage{last}"] + ([f"stage{feat_idx}"] if feat_idx is not None else [])
            batch = [x] + ([x.flip(3), x.flip(2)] + ([] if last_view is not None else [x.flip(2, 3)]) if tta else [])
            out = self.engine(torch.cat(batch) if len(batch) > 1 else x, wanted)
            if tta:
                views, out = out["logits"][1:], {k: v[:1] for k, v in out.items()}
            if pool is not None:
                features = out["features"][0]
                similar_job = submit_or_run(pool, lambda: self.aids.similar(features, source, rgb))
            fwd = self.last_cam.explain(out, last, cls_idx, tuple(cam_methods), feat_idx, n_feature_maps)
            runtime.update(classifier=self.engine.label, cam=f"forward-only, {self.engine.label}")
        else:
            fwd = forward_explain(bundle.model, x, cls_idx, layer_idx, tuple(cam_methods), feat_idx, n_feature_maps)
            runtime.update(classifier=f"torch {torch.__version__}", cam=f"torch autograd ({self.device.type})")
        lap("classify_and_cam")

        size = rgb.shape[:2]
        cams = {m: cam_at(c, size) for m, c in fwd.cams.items()}
        lap("cam_render")
        fmaps = None
        if fwd.feature_maps is not None:
            fmaps = FeatureMaps(self.layers[feat_idx], fwd.feature_channels, fwd.feature_means,
                                np.stack([scale_cam(m) for m in fwd.feature_maps]) if len(fwd.feature_maps)
                                else np.zeros((0, 1, 1), np.float32))
            lap("feature_maps")
        ood = float(mahalanobis(fwd.features[None], *self._ood)[0]) if self._ood else None
        checks = self._image_checks(rgb, original, ood_distance=ood, pixels=pixels.result())  # needs no mask
        lap("quality")
        similar = similar_job.result() if similar_job is not None else self.aids.similar(fwd.features, source, rgb)
        lap("similar_and_sets")

        probs = torch.softmax(torch.as_tensor(fwd.logits) / bundle.temperature, 0).numpy()
        tta_spread = tta_agreement = None
        if tta:
            if views is not None:
                views = torch.from_numpy(np.concatenate([views, last_view.result()]) if last_view else views)
                runtime["tta"] = self.engine.label + (" (with the original; the last view on a helper lane)"
                                                      if last_view else " (in one batch with the original)")
            else:
                views = torch.from_numpy(self.engine(_flip_views(x), ["logits"])["logits"])
                runtime["tta"] = self.engine.label
            all_probs = np.vstack([probs[None], torch.softmax(views / bundle.temperature, 1).numpy()])
            probs = all_probs.mean(0)
            top = int(probs.argmax())
            tta_spread = float(all_probs[:, top].std())
            tta_agreement = float((all_probs.argmax(1) == top).mean())
            lap("tta")
        entropy = _entropy(probs)
        top_p = float(probs.max())
        reasons = []
        if top_p < LOW_CONFIDENCE_PROB:
            reasons.append(f"top class probability {top_p:.0%} is under {LOW_CONFIDENCE_PROB:.0%}")
        if entropy > HIGH_ENTROPY:
            reasons.append(f"normalised entropy {entropy:.2f} is over {HIGH_ENTROPY}")
        if tta_agreement is not None and tta_agreement < 1:
            reasons.append(f"flipped views disagree on the top class ({tta_agreement:.0%} agree)")
        sets = self.aids.sets(probs)
        lap("similar_and_sets")

        mask = measures = None
        if seg_job is not None:
            mask, measures = seg_job.result()
            runtime["segmenter"] = self.seg_engine.label + " (beside the classifier)"
            lap("segment_and_measure_wait")
        elif segment and self.segmenter is not None:
            mask = self._segment(rgb)
            runtime["segmenter"] = self.seg_engine.label
            lap("segment")
            measures = self._measure(mask, rgb, scale)
            lap("measure")
        attention = attention_shares(cams, mask)
        warnings = self._with_mask_checks(checks, mask)
        lap("attention")
        return Analysis(
            image=rgb, scale_to_original=scale, classes=self.classes,
            display_names=[display_name(c) for c in self.classes], probabilities=probs.astype(np.float32),
            malignant_probability=float(sum(p for c, p in zip(self.classes, probs) if is_malignant(c))),
            melanoma_flag=is_flagged(bundle.meta, self.classes, probs),
            melanoma_threshold=float(self.flag["threshold"]) if self.flag else None, entropy=entropy, tta_spread=tta_spread, tta_agreement=tta_agreement,
            low_confidence=bool(reasons), uncertainty_reasons=reasons, quality_warnings=warnings,
            ood_distance=ood, ood_threshold=self.ood_threshold,
            cam_class=self.classes[fwd.cam_class], cam_layer=self.layers[fwd.cam_layer], cams=cams,
            attention_on_lesion=attention, feature_maps=fmaps, lesion_mask=mask, measurements=measures,
            notes=notes, timings_ms=t, parallel_ms=parallel, model_info=self.model_info(), runtime=runtime,
            similar=similar, similar_error=self.aids.index_error, prediction_sets=sets)

    def classify_many(self, items: Sequence[tuple[str, object]], tta: bool = False,
                      batch_size: int = 32) -> list[BatchPrediction]:
        """Batch review: (name, bytes/array) pairs -> predictions with flags; bad files get `error`
        (model.inference.batch_review: decoded at the working size `batch_size` at a time on the engine's lanes,
        classified a batch at a time; memory grows with neither the number of items nor their size)."""
        from model.inference.batch_review import classify_many

        return classify_many(self, items, tta, batch_size)

    # ------------------------------------------------------------------ internals
    def _measure(self, mask: np.ndarray, rgb: np.ndarray, scale: float):
        measures = measure_lesion(mask, rgb)
        if measures is not None and scale != 1.0:
            measures.area_px = int(round(measures.area_px * scale ** 2))
            measures.longest_diameter_px *= scale
        return measures

    def _start_segment(self, rgb: np.ndarray, scale: float, timings: dict):
        """Segmentation and measurements on a helper lane (model.nets.lanes) while the caller classifies;
        returns a future of (mask, measurements). Its own durations go into `timings`."""
        def job():
            t0 = time.perf_counter()
            mask = self._segment(rgb)
            t1 = time.perf_counter()
            measures = self._measure(mask, rgb, scale)
            timings.update(segment=round((t1 - t0) * 1000, 2), measure=round((time.perf_counter() - t1) * 1000, 2))
            return mask, measures
        return submit_or_run(lanes_pool(self.engine.lanes), job)

    def _segment(self, rgb: np.ndarray) -> np.ndarray:
        seg = self.segmenter
        x = normalize_hwc(model_rgb(rgb, seg.input_size, seg.domain), seg.mean, seg.std)[None]
        prob = torch.sigmoid(torch.from_numpy(self.seg_engine(x, ["logits"])["logits"]))[0, 0].numpy()
        return postprocess_mask(resize_map(prob, rgb.shape[:2]), float(seg.meta.get("threshold", 0.5)))

    def _quality_warnings(self, rgb, original, mask, ood_distance=None, short=False, small=None) -> list[str]:
        """The gate, judged from the pixels (`rgb` at the working size, `small` the same at the
        classifier's input size) and the size as uploaded (`original`, h x w)."""
        return self._with_mask_checks(self._image_checks(rgb, original, ood_distance, short, small), mask)

    def _pixel_checks(self, small: np.ndarray) -> tuple[float | None, float | None, bool]:
        """(sharpness, colour distance, grayscale) of the image at the classifier's input size."""
        size = self.classifier.input_size
        sharp = sharpness(small, size) if self.sharpness_floor is not None else None
        colour = None
        if self._colour is not None:
            mean, precision, _ = self._colour
            colour = float(mahalanobis(colour_features(small, size)[None], mean, precision)[0])
        return sharp, colour, is_grayscale(small)

    def _image_checks(self, rgb, original, ood_distance=None, short=False, small=None,
                      pixels=None) -> tuple[list[str], bool, bool]:
        """The checks that need no lesion mask: (warnings, grayscale, short). `pixels`: _pixel_checks."""
        if pixels is None:
            pixels = self._pixel_checks(model_rgb(rgb, self.classifier.input_size, self.classifier.domain)
                                         if small is None else small)
        s, d, gray = pixels
        w = []
        if min(original) < MIN_SIDE:
            w.append("tiny image" if short else f"The image is only {original[1]}x{original[0]} pixels as uploaded "
                     f"(a side under {MIN_SIDE}): too small for a dermoscopic assessment.")
        if s is not None:
            if s < self.sharpness_floor:
                w.append("blurred" if short else f"The image looks blurred (sharpness {s:.0f}, below 99% of "
                         f"training images' {self.sharpness_floor:.0f}).")
        if ood_distance is not None and self.ood_threshold is not None and ood_distance > self.ood_threshold:
            w.append("unlike training images" if short else "The image is unlike the dermoscopy images the model "
                     f"was trained on (feature distance {ood_distance:.0f} > {self.ood_threshold:.0f}, the "
                     "99th percentile of validation images). It may not be a dermoscopic image.")
        if d is not None:
            limit = self._colour[2]
            if d > limit:
                w.append("colours unlike dermoscopy" if short else "The image's colours are unlike the dermoscopy "
                         f"images the model was trained on (colour distance {d:.1f} > {limit:.1f}, the 99th "
                         "percentile of validation images). It may not be a dermoscopic image.")
        return w, gray, short

    @staticmethod
    def _with_mask_checks(checks: tuple[list[str], bool, bool], mask) -> list[str]:
        """_image_checks' warnings plus the lesion check, grayscale last (the order the page shows)."""
        w, gray, short = checks
        w = list(w)
        if mask is not None and 100 * mask.mean() < MIN_LESION_PCT:
            w.append("no lesion found" if short else "The segmenter found no lesion in this image.")
        if gray:
            w.append("grayscale" if short else "Grayscale image: the model was trained on colour dermoscopy.")
        return w
