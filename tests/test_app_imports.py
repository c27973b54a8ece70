"""The UI stays apart from the maths: pages and render helpers never import torch & co."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"torch", "timm", "pytorch_grad_cam", "segmentation_models_pytorch", "torchvision"}
PAGES = ("analyse", "batch", "studies", "card", "about")
# every page, its sections and the shared widgets; only app/resources.py (the cached loaders) reaches the models
UI_FILES = sorted(p for p in (REPO / "app").rglob("*.py") if p.name not in ("resources.py", "__init__.py")
                  and "__pycache__" not in p.parts)


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
    assert all((REPO / "app" / page / "page.py").is_file() for page in PAGES)
    # a `pages/` folder beside main.py switches Streamlit to legacy multipage mode for the first session
    assert not (REPO / "app" / "pages").exists()


def test_helpers_load_without_torch():
    """Importing the render helpers (and the model modules they use) must not pull torch in."""
    code = ("import sys; import app.widgets.components, app.analyse.case_report, app.widgets.tables, app.meta; "
            "import app.widgets.aids, app.card.aids, app.batch.aids, model.aids.similar, model.aids.conformal; "
            "bad = [m for m in ('torch', 'timm', 'pytorch_grad_cam') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
