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


@pytest.fixture(scope="session", autouse=True)
def sb3_logdir(tmp_path_factory):
    """SB3 makes a fresh ``$TMPDIR/SB3-<time>`` folder for every model built without a log
    folder; SB3_LOGDIR keeps those inside pytest's own temporary tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))
        yield
