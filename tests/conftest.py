"""Shared fixtures: the committed test data and tiny trained bundles (made once per session).

Everything here uses data inside the repository only (tests/data). The tiny bundles are real
`python train.py` runs (in-process, 1 epoch, timm's `test_*` architectures), so they have the same
layout and meta.json as the shipped models in assets/models/.
"""
from __future__ import annotations

import model.nets.tv_compat  # noqa: F401  (first: makes torchvision importable next to a CPU torch)

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
HAM_SMALL = DATA / "ham_small"
FULLRES = DATA / "fullres"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# converted ImageNet weights go to a throw-away cache, never the user's home
os.environ.setdefault("DERMO_WEIGHTS_CACHE", tempfile.mkdtemp(prefix="dermo-weights-"))

CLASSIFIER_ARGS = ["--arch", "test_resnet", "--img-size", "64", "80", "--epochs", "1",
                   "--batch-size", "16", "--threads", "1"]
SEGMENTER_ARGS = ["--arch", "tu-test_resnet", "--img-size", "64", "96", "--epochs", "1",
                  "--batch-size", "8", "--threads", "1"]


def subprocess_env() -> dict[str, str]:
    """Environment for CLI subprocesses: one thread, repo importable, no colour/progress noise."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return env


def train_bundle(task: str, out: Path, extra: list[str] | None = None, data: Path = HAM_SMALL) -> Path:
    """Run train.main in-process; returns the bundle folder (asserts success)."""
    import train

    args = CLASSIFIER_ARGS if task == "classify" else SEGMENTER_ARGS
    rc = train.main([task, "--data", str(data), "--out", str(out), *args, *(extra or [])])
    assert rc == 0, f"train.py {task} failed with exit code {rc}"
    return out


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ham_small() -> Path:
    """tests/data/ham_small: 42 images (6 per class), masks, metadata.csv."""
    return HAM_SMALL


@pytest.fixture(scope="session")
def fullres() -> Path:
    """tests/data/fullres: 3 original 600x450 images with masks and metadata.csv."""
    return FULLRES


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory) -> Path:
    """A tiny classifier bundle (timm test_resnet, 64x80, 1 epoch) trained on ham_small."""
    return train_bundle("classify", tmp_path_factory.mktemp("bundles") / "classifier")


@pytest.fixture(scope="session")
def tiny_segmenter_dir(tmp_path_factory) -> Path:
    """A tiny U-Net bundle (encoder tu-test_resnet, 64x96, 1 epoch) trained on ham_small."""
    return train_bundle("segment", tmp_path_factory.mktemp("bundles") / "segmenter")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory, tiny_classifier_dir, tiny_segmenter_dir) -> Path:
    """A folder laid out like assets/models/: classifier/ and segmenter/ bundles (copies)."""
    root = tmp_path_factory.mktemp("models")
    ignore = shutil.ignore_patterns(".train")
    shutil.copytree(tiny_classifier_dir, root / "classifier", ignore=ignore)
    shutil.copytree(tiny_segmenter_dir, root / "segmenter", ignore=ignore)
    return root


# 7-point criteria for the Derm7pt-like copy of ham_small (tests/test_concepts.py): each criterion's raw
# Derm7pt value by class, present for some classes and absent for others, in both parts
D7_VALUES = {
    "pigment_network": {"mel": "atypical", "bkl": "atypical", "nv": "typical"},
    "streaks": {"mel": "irregular", "df": "irregular", "nv": "regular"},
    "pigmentation": {"mel": "diffuse irregular", "akiec": "localized irregular", "bkl": "localized regular"},
    "regression_structures": {"mel": "blue areas", "bcc": "white areas", "vasc": "combinations"},
    "dots_and_globules": {"mel": "irregular", "nv": "regular", "bcc": "irregular"},
    "blue_whitish_veil": {"mel": "present", "vasc": "present"},
    "vascular_structures": {"vasc": "dotted", "bcc": "arborizing", "mel": "within regression", "akiec": "linear irregular"},
}


def derm7pt_copy(out: Path, data: Path = HAM_SMALL) -> Path:
    """ham_small in Derm7pt's layout with the seven criteria columns (D7_VALUES; `absent` elsewhere),
    images alternating between the select and report parts."""
    import csv

    (out / "images").mkdir(parents=True)
    rows = list(csv.DictReader((data / "metadata.csv").open()))
    with (out / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "dx", "part", "diagnosis", *D7_VALUES])
        for i, r in enumerate(rows):
            shutil.copy(data / "images" / f"{r['image_id']}.jpg", out / "images")
            w.writerow([r["image_id"], r["dx"], "report" if i % 2 else "select", r["dx"],
                        *(v.get(r["dx"], "absent") for v in D7_VALUES.values())])
    return out


@pytest.fixture(scope="session")
def tiny_derm7pt(tmp_path_factory) -> Path:
    return derm7pt_copy(tmp_path_factory.mktemp("derm7pt") / "d7")


@pytest.fixture(scope="session")
def concept_models_dir(tmp_path_factory, tiny_models_dir, tiny_derm7pt) -> Path:
    """tiny_models_dir's copy whose classifier has 7-point concept probes (model.cli.concepts, 3 runs, 10 random)."""
    from model.cli.concepts import main as concepts_main

    root = tmp_path_factory.mktemp("concept-models")
    shutil.copytree(tiny_models_dir / "classifier", root / "classifier")
    shutil.copytree(tiny_models_dir / "segmenter", root / "segmenter")
    assert concepts_main([str(root / "classifier"), "--data", str(tiny_derm7pt), "--runs", "3", "--random", "10"]) == 0
    return root
