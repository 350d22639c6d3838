from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-data"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The original work's held-out test sets (evaluation only, never training data)."""
    if not (REFERENCE / "crosses_test_20000.npz").is_file():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE
