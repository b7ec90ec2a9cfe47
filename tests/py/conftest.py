"""Shared fixtures for the Python oracle tests: the kiln binary, the shared folder and the
default GGUF model (fetched by scripts/get_default_model.sh; tests that need it skip loudly
when it cannot be obtained)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def kiln_bin() -> str:
    b = os.environ.get("KILN_BIN", str(ROOT / "build" / "kiln"))
    return b if os.path.isabs(b) else str(ROOT / b)


@pytest.fixture(scope="session")
def kiln():
    b = kiln_bin()
    if not os.access(b, os.X_OK):
        pytest.skip(f"SKIP: kiln binary not found at {b} (build first or set KILN_BIN)")
    return b


@pytest.fixture(scope="session")
def default_gguf():
    try:
        p = subprocess.run([str(ROOT / "scripts" / "get_default_model.sh")], check=True,
                           capture_output=True, text=True, timeout=600).stdout.strip()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"SKIP: the default model SmolLM2-135M-Instruct.Q4_1.gguf cannot be obtained: {e}")
    if not p or not os.path.exists(p):
        pytest.skip("SKIP: get_default_model.sh printed no usable path")
    return p
