"""The UI stays apart from the maths: pages and render helpers never import torch & co."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"torch", "timm", "pytorch_grad_cam", "segmentation_models_pytorch", "torchvision"}
UI_FILES = sorted((REPO / "app" / "views").glob("*.py")) + [
    REPO / "app" / name for name in ("components.py", "case_report.py", "analyse_sections.py", "analyse_input.py",
                                     "batch_table.py", "meta.py", "sidebar.py", "main.py", "aids_view.py",
                                     "aids_card.py", "batch_aids.py")]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_ui_file_does_not_import_torch(path):
    assert path.is_file()
    bad = {m for m in _imported_modules(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {bad}"


def test_pages_exist_outside_a_pages_folder():
    assert {p.stem for p in (REPO / "app" / "views").glob("*.py")} >= {"analyse", "batch", "model_card", "about"}
    # a `pages/` folder beside main.py switches Streamlit to legacy multipage mode for the first session
    assert not (REPO / "app" / "pages").exists()


def test_helpers_load_without_torch():
    """Importing the render helpers (and the model modules they use) must not pull torch in."""
    code = ("import sys; import app.components, app.case_report, app.batch_table, app.meta; "
            "import app.aids_view, app.aids_card, app.batch_aids, model.aids.similar, model.aids.conformal; "
            "bad = [m for m in ('torch', 'timm', 'pytorch_grad_cam') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
