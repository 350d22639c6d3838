"""The code style is part of the test command, so CI enforces it too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    cmd = [sys.executable, "-m", "ruff", "check", str(ROOT)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_shell_scripts_parse():
    """``.ci/gpu-check`` runs only on a lent GPU machine, so a syntax error there would cost
    that machine's time: ``bash -n`` catches it on the CPU."""
    for script in (ROOT / ".ci").iterdir():
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
