"""The one inference entry point: an image in, everything the app shows out.

    analyzer = Analyzer.from_dir("assets/models")
    result = analyzer.analyze(image_bytes_or_rgb, cam_class="mel", cam_methods=("gradcam", "eigencam"))

One forward pass gives probabilities, pre-logit features (out-of-distribution check), CAM
activations and gradients and the chosen layer's feature maps; TTA views go in one extra
batched pass. Nothing is registered on the shared models, so one Analyzer serves many threads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model.aids.case_aids import CaseAids
from model.aids.melanoma_flag import flag_config, is_flagged
from model.data.preprocess import model_rgb, normalize_hwc, resize_map
from model.explain.cam_forward import LastStageCam
from model.explain.cams import CAM_METHODS, cam_at, forward_explain, scale_cam
from model.inference.batch_review import classify_many
from model.inference.checklist import Checklist, head_map
from model.inference.gate import QualityGate
from model.explain.attention import heat_shares, off_lesion_limits
from model.inference.artefacts import detect_artefacts, outline_touches
from model.inference.measurements import measure_lesion
from model.inference.results import Analysis, BatchPrediction, FeatureMaps, WhatIf
from model.inference.working import entropy, flip_views, uncertainty_reasons, working_image
from model.labels import display_name, is_malignant
from model.nets.bundle import Bundle, BundleError, load_bundle
from model.nets.classifier import feature_layers
from model.nets.engine import engine_for
from model.nets.forward import pick_device
from model.nets.lanes import lanes_pool, submit_or_run
from model.nets.segmenter import postprocess_mask



class _Clock:
    """Per-call stage timings in ms; a second lap of a stage adds to it."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self.parallel: dict[str, float] = {}
        self.clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.t[name] = round(self.t.get(name, 0.0) + (now - self.clock) * 1000, 2)
        self.clock = now


@dataclass
class _Request:
    """What the caller asked to see, as indices into the model's classes and layers."""
    cam_methods: tuple[str, ...]
    cls_idx: int | None
    layer_idx: int
    feat_idx: int | None
    n_feature_maps: int
    tta: bool
    segment: bool


@dataclass
class _Image:
    source: object
    rgb: np.ndarray                 # at the working size
    original: tuple[int, int]       # upright (h, w) as uploaded
    scale: float                    # uploaded / working length
    small: np.ndarray               # through the one input path, at the classifier's input size
    x: torch.Tensor                 # normalised, 1x3xHxW
    notes: list[str]


@dataclass
class _Helpers:
    """Work handed to a helper lane (each a future, or None when it runs on the calling thread)."""
    pool: object = None
    segment: object = None
    last_view: object = None
    pixels: object = None
    similar: object = None


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
        self.gate = QualityGate(classifier)
        self.aids = CaseAids.from_bundle(classifier)   # similar cases and conformal sets (each may be absent)
        self.checklist = Checklist.from_bundle(classifier)  # 7-point concept probes (may be absent: .error says why)
        self.heat_limits = off_lesion_limits(classifier.meta)   # per CAM method; {} when not measured

    @classmethod
    def from_dir(cls, models_dir: str | Path, device: str = "auto", engine: str | None = None) -> "Analyzer":
        """Load `classifier/` and (if present) `segmenter/` bundles from a models folder."""
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
        """Analyse one image (file bytes, a path or an RGB uint8 array). Raises ImageError for bad input.

        decode -> classify with TTA -> CAMs -> gate -> aids -> segment and measure, each a method below."""
        clock, runtime = _Clock(), {}
        img = self._decode(source)
        clock.lap("decode_resize")
        req = self._request(cam_class, cam_layer, cam_methods, feature_layer, n_feature_maps, tta, segment)
        helpers = self._start_helpers(img, req, clock)
        fwd, views = self._classify_and_explain(img, req, helpers, runtime)
        clock.lap("classify_and_cam")
        cams, fmaps = self._render_cams(fwd, img, req, clock)
        ood, checks = self._gate(fwd, img, helpers)
        clock.lap("quality")
        similar = helpers.similar.result() if helpers.similar is not None else \
            self.aids.similar(fwd.features, source, img.rgb)
        clock.lap("similar_and_sets")
        probs, tta_spread, tta_agreement = self._probabilities(fwd, img, views, helpers, runtime, req.tta)
        if req.tta:
            clock.lap("tta")
        reasons = uncertainty_reasons(probs, tta_agreement)
        sets = self.aids.sets(probs)
        clock.lap("similar_and_sets")
        checklist = self._checklist(fwd, img)
        clock.lap("checklist")
        mask, measures, artefacts = self._segment_and_measure(img, req, helpers, runtime, clock)
        heat = heat_shares(cams, mask, artefacts.union if artefacts is not None else None)
        attention = {m: None if h is None else h.lesion for m, h in heat.items()}
        warnings = self.gate.with_mask_checks(checks, mask)
        clock.lap("attention")
        return Analysis(
            image=img.rgb, scale_to_original=img.scale, classes=self.classes,
            display_names=[display_name(c) for c in self.classes], probabilities=probs.astype(np.float32),
            malignant_probability=float(sum(p for c, p in zip(self.classes, probs) if is_malignant(c))),
            melanoma_flag=is_flagged(self.classifier.meta, self.classes, probs),
            melanoma_threshold=float(self.flag["threshold"]) if self.flag else None, entropy=entropy(probs),
            tta_spread=tta_spread, tta_agreement=tta_agreement,
            low_confidence=bool(reasons), uncertainty_reasons=reasons, quality_warnings=warnings,
            ood_distance=ood, ood_threshold=self.gate.ood_threshold,
            cam_class=self.classes[fwd.cam_class], cam_layer=self.layers[fwd.cam_layer], cams=cams,
            attention_on_lesion=attention, feature_maps=fmaps, lesion_mask=mask, measurements=measures,
            notes=img.notes, timings_ms=clock.t, parallel_ms=clock.parallel, model_info=self.model_info(),
            runtime=runtime, similar=similar, similar_error=self.aids.index_error, prediction_sets=sets,
            set_stricter=dict((self.aids.conformal or {}).get("stricter") or {}),
            checklist=checklist, checklist_error=self.checklist.error, artefacts=artefacts, heat=heat,
            outline_touches=outline_touches(artefacts, mask) if artefacts is not None else [])

    def classify_many(self, items: Sequence[tuple[str, object]], tta: bool = False,
                      batch_size: int = 32) -> list[BatchPrediction]:
        """Batch review: (name, bytes/array) pairs -> predictions with flags; bad files get `error`
        (model.inference.batch_review: decoded at the working size `batch_size` at a time on the engine's lanes,
        classified a batch at a time; memory grows with neither the number of items nor their size)."""
        return classify_many(self, items, tta, batch_size)

    def what_if(self, rgb: np.ndarray, name: str, mask: np.ndarray | None = None, *, seed: int = 0,
                cam_class: str | None = None, cam_layer: str | None = None, cam_method: str = "gradcam") -> WhatIf:
        """Draw what-if `name` (model.explain.confounders) on `rgb` (an Analysis's image; `mask`: its lesion
        mask, needed by lesion-only / surroundings-only) and classify and explain it: the probabilities,
        prediction sets and one heatmap, without segmentation, checks or similar cases. Raises WhatIfError
        when the what-if cannot be drawn (no lesion)."""
        from model.explain.confounders import what_if

        t0 = time.perf_counter()
        img = self._decode(what_if(name, rgb, mask, seed))
        req = self._request(cam_class, cam_layer, (cam_method,), None, 0, False, False)
        fwd, _ = self._classify_and_explain(img, req, _Helpers(), {})
        probs = torch.softmax(torch.as_tensor(fwd.logits) / self.classifier.temperature, 0).numpy()
        cam = cam_at(fwd.cams[cam_method], img.rgb.shape[:2])
        return WhatIf(name, img.rgb, self.classes, probs.astype(np.float32), cam, cam_method,
                      self.classes[fwd.cam_class], self.layers[fwd.cam_layer], self.aids.sets(probs),
                      round((time.perf_counter() - t0) * 1000, 2))

    def segment(self, rgb: np.ndarray) -> np.ndarray | None:
        """The U-Net's lesion mask (bool, at rgb's size) for an RGB uint8 image; None without a segmenter."""
        return self._segment(rgb) if self.segmenter is not None else None

    # ------------------------------------------------------------------ the stages of analyze
    def _decode(self, source) -> _Image:
        notes: list[str] = []
        rgb, original, scale = working_image(source, notes)
        b = self.classifier
        small = model_rgb(rgb, b.input_size, b.domain)
        x = torch.from_numpy(normalize_hwc(small, b.mean, b.std)[None]).to(self.device)
        return _Image(source, rgb, tuple(original), scale, small, x, notes)

    def _request(self, cam_class, cam_layer, cam_methods, feature_layer, n_feature_maps, tta, segment) -> _Request:
        unknown = [m for m in cam_methods if m not in CAM_METHODS]
        if unknown:
            raise ValueError(f"unknown CAM methods {unknown}")
        return _Request(tuple(cam_methods), self.classes.index(cam_class) if cam_class else None,
                        self.layers.index(cam_layer) if cam_layer else len(self.layers) - 1,
                        self.layers.index(feature_layer) if feature_layer else None, n_feature_maps, tta, segment)

    def _lean(self, req: _Request) -> bool:
        """Forward-only (engine + LastStageCam) when the CAM is wanted at the last stage."""
        return self.engine.kind != "torch" and self.last_cam.supported and req.layer_idx == len(self.layers) - 1

    def _start_helpers(self, img: _Image, req: _Request, clock: _Clock) -> _Helpers:
        """A helper lane takes segmentation + measurements, the last flipped view, the pixel checks and
        (once there are features) the similar cases, while this thread runs the original with the other
        two views and explains it; whatever no helper has started when it is needed runs here
        (docs/inference-engine.md)."""
        h = _Helpers(pool=lanes_pool(getattr(self.engine, "lanes", 1)) if self._lean(req) else None)
        if h.pool is not None:
            if req.segment and self.segmenter is not None:
                h.segment = self._start_segment(img.rgb, img.scale, clock.parallel)
            if req.tta:
                h.last_view = submit_or_run(h.pool, lambda: self.engine(img.x.flip(2, 3), ["logits"])["logits"])
        h.pixels = submit_or_run(h.pool, lambda: self.gate.pixel_checks(img.small))
        return h

    def _classify_and_explain(self, img: _Image, req: _Request, h: _Helpers, runtime: dict):
        """One pass: logits, features, the CAMs and feature maps (and the flipped views when lean)."""
        x, views = img.x, None
        if not self._lean(req):
            fwd = forward_explain(self.classifier.model, x, req.cls_idx, req.layer_idx, req.cam_methods,
                                  req.feat_idx, req.n_feature_maps)
            runtime.update(classifier=f"torch {torch.__version__}", cam=f"torch autograd ({self.device.type})")
            return fwd, views
        last = len(self.layers) - 1
        wanted = ["logits", "features", f"stage{last}"] + ([f"stage{req.feat_idx}"] if req.feat_idx is not None else [])
        batch = [x] + ([x.flip(3), x.flip(2)] + ([] if h.last_view is not None else [x.flip(2, 3)]) if req.tta else [])
        out = self.engine(torch.cat(batch) if len(batch) > 1 else x, wanted)
        if req.tta:
            views, out = out["logits"][1:], {k: v[:1] for k, v in out.items()}
        if h.pool is not None:
            features = out["features"][0]
            h.similar = submit_or_run(h.pool, lambda: self.aids.similar(features, img.source, img.rgb))
        fwd = self.last_cam.explain(out, last, req.cls_idx, req.cam_methods, req.feat_idx, req.n_feature_maps)
        runtime.update(classifier=self.engine.label, cam=f"forward-only, {self.engine.label}")
        return fwd, views

    def _render_cams(self, fwd, img: _Image, req: _Request, clock: _Clock):
        cams = {m: cam_at(c, img.rgb.shape[:2]) for m, c in fwd.cams.items()}
        clock.lap("cam_render")
        fmaps = None
        if fwd.feature_maps is not None:
            fmaps = FeatureMaps(self.layers[req.feat_idx], fwd.feature_channels, fwd.feature_means,
                                np.stack([scale_cam(m) for m in fwd.feature_maps]) if len(fwd.feature_maps)
                                else np.zeros((0, 1, 1), np.float32))
            clock.lap("feature_maps")
        return cams, fmaps

    def _gate(self, fwd, img: _Image, h: _Helpers):
        """The checks that need no mask: (out-of-distribution distance, Checks)."""
        d = self.gate.ood_distances(fwd.features[None])
        ood = float(d[0]) if d is not None else None
        return ood, self.gate.image_checks(img.rgb, img.original, ood_distance=ood, pixels=h.pixels.result())

    def _probabilities(self, fwd, img: _Image, views, h: _Helpers, runtime: dict, tta: bool):
        """Calibrated probabilities, averaged over the flipped views with TTA: (probs, spread, agreement)."""
        t = self.classifier.temperature
        probs = torch.softmax(torch.as_tensor(fwd.logits) / t, 0).numpy()
        if not tta:
            return probs, None, None
        if views is not None:
            views = torch.from_numpy(np.concatenate([views, h.last_view.result()]) if h.last_view else views)
            runtime["tta"] = self.engine.label + (" (with the original; the last view on a helper lane)"
                                                  if h.last_view else " (in one batch with the original)")
        else:
            views = torch.from_numpy(self.engine(flip_views(img.x), ["logits"])["logits"])
            runtime["tta"] = self.engine.label
        all_probs = np.vstack([probs[None], torch.softmax(views / t, 1).numpy()])
        probs = all_probs.mean(0)
        top = int(probs.argmax())
        return probs, float(all_probs[:, top].std()), float((all_probs.argmax(1) == top).mean())

    def _checklist(self, fwd, img: _Image):
        """The 7-point checklist from the probes: presence from the pooled features, maps from the head's
        last map (the last stage's map from this pass, or one forward-only pass when the CAM was elsewhere)."""
        if not self.checklist.available:
            return None
        if not self.last_cam.supported:
            return self.checklist.reading(fwd.features, None)
        a = fwd.last_stage
        if a is None:
            name = f"stage{len(self.layers) - 1}"
            a = self.engine(img.x, [name])[name][0]
        return self.checklist.reading(fwd.features, head_map(self.last_cam.tail, a, self.device))

    def _segment_and_measure(self, img: _Image, req: _Request, h: _Helpers, runtime: dict, clock: _Clock):
        if h.segment is not None:
            mask, measures, artefacts = h.segment.result()
            runtime["segmenter"] = self.seg_engine.label + " (beside the classifier)"
            clock.lap("segment_and_measure_wait")
            return mask, measures, artefacts
        if not (req.segment and self.segmenter is not None):
            return None, None, None
        mask = self._segment(img.rgb)
        runtime["segmenter"] = self.seg_engine.label
        clock.lap("segment")
        measures = self._measure(mask, img.rgb, img.scale)
        clock.lap("measure")
        artefacts = detect_artefacts(img.rgb)
        clock.lap("artefacts")
        return mask, measures, artefacts

    # ------------------------------------------------------------------ internals
    def _measure(self, mask: np.ndarray, rgb: np.ndarray, scale: float):
        measures = measure_lesion(mask, rgb)
        if measures is not None and scale != 1.0:
            measures.area_px = int(round(measures.area_px * scale ** 2))
            measures.longest_diameter_px *= scale
        return measures

    def _start_segment(self, rgb: np.ndarray, scale: float, timings: dict):
        """Segmentation, measurements and the artefact masks on a helper lane (model.nets.lanes) while the
        caller classifies; returns a future of (mask, measurements, artefacts). Its own durations go into `timings`."""
        def job():
            t0 = time.perf_counter()
            mask = self._segment(rgb)
            t1 = time.perf_counter()
            measures = self._measure(mask, rgb, scale)
            t2 = time.perf_counter()
            artefacts = detect_artefacts(rgb)
            timings.update(segment=round((t1 - t0) * 1000, 2), measure=round((t2 - t1) * 1000, 2),
                           artefacts=round((time.perf_counter() - t2) * 1000, 2))
            return mask, measures, artefacts
        return submit_or_run(lanes_pool(self.engine.lanes), job)

    def _segment(self, rgb: np.ndarray) -> np.ndarray:
        seg = self.segmenter
        x = normalize_hwc(model_rgb(rgb, seg.input_size, seg.domain), seg.mean, seg.std)[None]
        prob = torch.sigmoid(torch.from_numpy(self.seg_engine(x, ["logits"])["logits"]))[0, 0].numpy()
        return postprocess_mask(resize_map(prob, rgb.shape[:2]), float(seg.meta.get("threshold", 0.5)))
