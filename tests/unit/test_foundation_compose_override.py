"""tests/compose/docker-compose.test.yml stays a thin override of docker-compose.yml: same settings, local images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
OVERRIDE: dict[str, Any] = yaml.safe_load(
    (REPO / "tests" / "compose" / "docker-compose.test.yml").read_text()
)
BUILD_SCRIPT = (REPO / "tests" / "images" / "build.sh").read_text()


def _built_tags() -> set[str]:
    return set(re.findall(r"^\w+_IMAGE=(\S+)$", BUILD_SCRIPT, flags=re.MULTILINE))


def test_override_uses_only_images_that_build_sh_builds() -> None:
    """Every image the override names is one tests/images/build.sh makes (nothing to pull)."""
    images = {service["image"] for service in OVERRIDE["services"].values() if "image" in service}
    assert images <= _built_tags()
    assert OVERRIDE["services"]["kafka"]["image"] != BASE["services"]["kafka"]["image"]


def test_cpu_worker_has_the_gpu_workers_settings_except_the_device() -> None:
    """worker-cpu repeats worker-gpu0's environment (anchors do not cross files), only on the CPU."""
    gpu = BASE["services"]["worker-gpu0"]["environment"]
    cpu = OVERRIDE["services"]["worker-cpu"]["environment"]
    for name, value in gpu.items():
        if name in {"KIDNEYCT_DEVICE", "KIDNEYCT_BATCH_SIZE"}:
            continue
        # The required-variable message differs; the URL around it must not.
        strip = re.compile(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}")
        assert strip.sub("PW", str(cpu.get(name))) == strip.sub("PW", str(value)), name
    assert cpu["KIDNEYCT_DEVICE"] == "cpu"
    assert "deploy" not in OVERRIDE["services"]["worker-cpu"], (
        "a CPU worker reserves no GPU, so it may be scaled"
    )
    assert OVERRIDE["services"]["worker-cpu"]["command"] == BASE["services"]["worker-gpu0"]["command"]


def test_gpu_worker_only_starts_with_its_profile_in_the_test() -> None:
    """The test machines have no GPU: worker-gpu0 is moved behind a profile, not changed."""
    assert OVERRIDE["services"]["worker-gpu0"] == {"profiles": ["gpu"]}


def test_dockerfile_base_image_defaults_to_the_public_one() -> None:
    """Users keep pulling python:3.11-slim; only the tests pass BASE_IMAGE."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile
