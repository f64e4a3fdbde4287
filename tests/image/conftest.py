"""The images, built by ``scripts/test_images.sh`` (``make test-images``), run as their platforms
run them: the Action's as GitHub's runner runs a Docker action, the Space's as a Docker Space.

The script builds both images and passes their tags in ``GRADIENCE_ACTION_IMAGE`` and
``GRADIENCE_SPACE_IMAGE``; the main suite (``make test``'s pytest run) leaves this folder out.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

# What a leaked credential looks like: Hugging Face and GitHub token prefixes.
TOKEN_RE = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{8,})")


def image(var: str) -> str:
    tag = os.environ.get(var)
    if not tag:
        pytest.skip(f"{var} is not set: scripts/test_images.sh builds the image and runs these")
    return tag


def docker(
    *args: str, check: bool = True, timeout: float = 120, **kw
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """The docker client (DOCKER_HOST from the environment the script set)."""
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def action_image() -> str:
    return image("GRADIENCE_ACTION_IMAGE")


@pytest.fixture(scope="session")
def space_image() -> str:
    return image("GRADIENCE_SPACE_IMAGE")
