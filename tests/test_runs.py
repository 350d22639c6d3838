"""Run folders and checkpoint files (htm_gym.runs, htm_gym.files)."""

from __future__ import annotations

import pytest
import torch

from htm_gym.files import atomic_save
from htm_gym.runs import fresh_path, is_plain_name, new_run_dir


def test_fresh_path_never_reuses_a_name(tmp_path):
    (tmp_path / "report").mkdir()  # a directory without a suffix, as evaluate --report writes
    assert fresh_path(tmp_path / "report") == tmp_path / "report.1"
    (tmp_path / "report.1").mkdir()
    assert fresh_path(tmp_path / "report") == tmp_path / "report.2"
    (tmp_path / "s.npz").touch()
    (tmp_path / "s.1.png").touch()  # a sibling taken: skip that number too
    assert fresh_path(tmp_path / "s.npz", (".png",)) == tmp_path / "s.2.npz"
    assert fresh_path(tmp_path / "free.pt") == tmp_path / "free.pt"


def test_run_names_stay_inside_the_runs_folder(tmp_path):
    assert is_plain_name("exp1") and not is_plain_name("../x") and not is_plain_name("/abs")
    assert not is_plain_name("..") and not is_plain_name("a/b") and not is_plain_name("")
    with pytest.raises(ValueError, match="plain folder name"):
        new_run_dir(tmp_path, "../escape", "p")
    made = new_run_dir(tmp_path, "ok", "p")
    with pytest.raises(FileExistsError, match="already exists"):
        new_run_dir(tmp_path, "ok", "p")
    assert made == tmp_path / "ok"


def test_a_failed_save_names_the_path_and_leaves_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"a": 1}, path)

    def full_disk(obj, f):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise RuntimeError("unexpected pos 123")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*checkpoint\.pt"):
        atomic_save({"a": 2}, path)
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}, "the previous file is intact"
