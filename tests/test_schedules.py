"""Curriculum stages and the schedules that advance every update (agents.schedules)."""

from __future__ import annotations

import pytest

from agents.schedules import Schedule, Stage, default_stage_steps


def test_schedule_shapes():
    s = Schedule(
        (Stage(0, 10), Stage(1, 10), Stage(None, 80, lr=1e-3, lr_decay=0.5)),
        lr_floor=1e-4,
        exploit_start=0.7,
        exploit_end=0.85,
    )
    assert s.total_steps == 100 and s.stage_at(15) == (1, 5) and s.stage_at(99) == (2, 79)
    assert s.entropy_target(0) == 1.0 and s.entropy_target(50) == pytest.approx(0.3)
    assert s.entropy_target(99) == 0.0
    assert s.tau(0) == 0.5 and s.tau(80) == 0.0
    assert s.lr(20) == 1e-3 and s.lr(30) == 1e-4, "decayed within the stage, floored"
    assert s.depth(10, 5) == 1.0 and s.depth(25, 5) == 1.5 and s.depth(60, 5) == 5.0
    with pytest.raises(ValueError):
        Stage(merges=1, steps=0)
    with pytest.raises(ValueError):
        Schedule((Stage(0, 1),), explore_end=0.9, working_start=0.1)


def test_default_stage_steps_per_dataset():
    assert default_stage_steps("crosses", 5, 2)[-1] > 1000  # a long to-root stage
    # a token file: one merge more per stage up to 4 (or the smallest set's P - 1)
    assert default_stage_steps("tokens", 11, 3) == (100, 300, 300, 2000)
    assert default_stage_steps("unknown", 3, 2) == (100,) * 4
