"""The library: data, nets, explanations, aids, inference, evaluation, training (see docs/architecture.md).

Importing it switches the inference runtimes' telemetry off before either is loaded, so a run
writes nothing outside `--out` and the app's own data folder: ONNX Runtime's Linux build otherwise
writes a device id and an event database under ~/.cache/Microsoft at import (and warns when HOME is
not writable), and `import openvino` starts OpenVINO's usage telemetry (~/intel/openvino_ga_cid,
~/intel/stats, an event sent). `ORT_DISABLE_TELEMETRY=1` is ONNX Runtime's full opt-out when set
before it loads; OpenVINO falls back to its own no-op stub when `openvino_telemetry` cannot be
imported, which a `None` entry in `sys.modules` makes so. torch makes its compiler's cache folder
(<tmp>/torchinductor_<user>) when timm imports torch.fx; nothing here compiles, so it is pointed
at the temporary folder itself, which exists already."""
import os as _os
import sys as _sys
import tempfile as _tempfile

_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _tempfile.gettempdir())
_sys.modules.setdefault("openvino_telemetry", None)   # type: ignore[arg-type]
