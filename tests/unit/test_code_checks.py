"""The code stays to the project's lint rules and types (pyproject.toml's [tool.ruff] and
[tool.mypy]): an unused import, a shadowed name, or a handler given the wrong contract fails
here, not in review or in production."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_services_and_the_kit():
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "shared", "services"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
