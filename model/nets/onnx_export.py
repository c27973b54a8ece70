"""Export a bundle's network to ONNX beside its weights, tied to them by hash.

    python -m model.cli.onnx_export BUNDLE [BUNDLE ...]

Writes `BUNDLE/model.onnx`. The file records the sha256 of `weights.safetensors` it was made
from (ONNX metadata `weights_sha256`); `model.nets.engine` refuses a file whose hash differs (stale
after retraining, or copied from another bundle) and says how to rebuild it.

Classifier graph: input `image` (N x 3 x H x W, normalised), outputs `logits`, `features`
(pre-logits) and `stage0..stageK` (the feature_layers' outputs, shallow to deep), all from one
pass. Segmenter graph: `image` -> `logits` (N x 1 x H x W). Batch is dynamic; H x W is the
bundle's input size. Exported with the classic TorchScript exporter (`dynamo=False`, needs only
the `onnx` package) and without constant folding, so every weight stays the bundle's own tensor;
weights that are exactly representable in float16 (all of them for a `--half` bundle) are stored
as float16 and cast to float32 by a Cast node the runtime folds at load: the file is about the
size of the safetensors and the values the runtime sees are bit-identical.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from model.files import atomic_write
from model.nets.bundle import Bundle, BundleError, load_bundle
from model.nets.weights_hash import weights_sha256

ONNX_FILE = "model.onnx"
OPSET = 17


def output_names(bundle: Bundle) -> list[str]:
    if bundle.task == "segment":
        return ["logits"]
    from model.nets.classifier import feature_layers

    return ["logits", "features"] + [f"stage{i}" for i in range(len(feature_layers(bundle.model)))]


def export_wrapper(bundle: Bundle):
    import torch

    from model.nets.classifier import feature_layers

    model = bundle.model
    if bundle.task == "segment":
        return model
    n = len(feature_layers(model))

    class ClassifierOutputs(torch.nn.Module):
        """logits, pre-logits and every stage's map, exactly as model.explain.cams computes them."""

        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            final, inter = self.m.forward_intermediates(x, indices=list(range(n)))
            return (self.m.forward_head(final), self.m.forward_head(final, pre_logits=True), *inter)

    return ClassifierOutputs().eval()


def _store_half(model_proto) -> int:
    """Store float32 initializers that float16 holds exactly as float16 + Cast; returns how many."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    casts, kept, n = [], [], 0
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 16 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            kept.append(numpy_helper.from_array(a.astype(np.float16), init.name + "__f16"))
            casts.append(helper.make_node("Cast", [init.name + "__f16"], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "__cast"))
            n += 1
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return n


def export_bundle(bundle_dir: str | Path, check: bool = True) -> Path:
    """Write BUNDLE/model.onnx for the bundle's network (atomically); returns its path.
    With `check`, the file is run once by ONNX Runtime (when installed) against torch."""
    try:
        import onnx
    except ImportError:
        raise BundleError("Exporting to ONNX needs the `onnx` package: pip install -r requirements-train.txt") from None
    import torch

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir, "cpu")
    sha = weights_sha256(bundle_dir)
    names = output_names(bundle)
    x = torch.randn(1, 3, *bundle.input_size, generator=torch.Generator().manual_seed(0))
    out = bundle_dir / ONNX_FILE

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(export_wrapper(bundle), (x,), tmp, dynamo=False, input_names=["image"],
                              output_names=names, dynamic_axes={k: {0: "batch"} for k in ["image", *names]},
                              opset_version=OPSET, do_constant_folding=False)
        proto = onnx.load(tmp)
        _store_half(proto)
        meta = {"weights_sha256": sha, "task": bundle.task, "arch": bundle.meta["arch"],
                "input_size": f"{bundle.input_size[0]}x{bundle.input_size[1]}", "outputs": ",".join(names),
                "torch": torch.__version__, "exporter": "torch.onnx.export(dynamo=False)"}
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        if check:
            _check_against_torch(bundle, tmp, x)
    return atomic_write(out, write)


def _check_against_torch(bundle: Bundle, path: str, x, tol: float = 1e-4) -> None:
    """Refuse an export whose outputs differ from torch (needs onnxruntime; skipped without it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    import numpy as np
    import torch

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        want = export_wrapper(bundle)(x)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    for name, g, w in zip(output_names(bundle), got, want):
        w = w.float().numpy()
        err = float(np.abs(g - w).max() / max(1.0, float(np.abs(w).max())))
        if g.shape != w.shape or err > tol:
            raise BundleError(f"ONNX export of {bundle.path} disagrees with torch on {name} "
                              f"(shape {g.shape} vs {w.shape}, relative error {err:.2g}); not written.")


def export_after_training(bundle_dir: str | Path) -> Path | None:
    """train.py's last step: write model.onnx, or say why not (the app then runs the bundle with torch)."""
    try:
        path = export_bundle(bundle_dir)
    except Exception as e:  # noqa: BLE001 - an export failure must not lose a finished training run
        print(f"ONNX export skipped ({type(e).__name__}: {str(e)[:200]}); the bundle runs with torch. "
              f"Retry with `python -m model.cli.onnx_export {bundle_dir}`.", file=sys.stderr)
        return None
    print(f"ONNX export: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path
