"""Training and evaluating on a user's own token file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_script

from htm_gym.datasets import TokenFileGenerator, load_token_file


def test_generator_splits_normalises_and_knows_the_groups(tokens_file):
    full = TokenFileGenerator(path=tokens_file)
    train, test = full.with_split("train"), full.with_split("test")
    assert len(train.indices) == 36 and len(test.indices) == 4
    assert not set(train.indices) & set(test.indices)
    data = load_token_file(str(tokens_file))
    real = data.tokens[np.arange(12)[None] < data.num_tokens[:, None]]
    assert full.token_loc == pytest.approx(real.mean()) and full.token_dim == 2
    assert full.token_scale == pytest.approx(real.std()) and test.token_scale == full.token_scale
    assert (full.min_tokens, full.max_tokens) == (6, 12)
    assert full.constituents(6) == [(0, 1, 2, 3), (4, 5), (0, 1, 2, 3, 4, 5)]
    assert full.constituents(9) == [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 2, 3, 4, 5, 6, 7, 8)]
    held = test.subset()
    assert np.array_equal(held.num_tokens, data.num_tokens[test.indices])
    drawn = train.sample(np.random.default_rng(0), 50)
    assert np.isin(drawn.num_tokens, data.num_tokens[train.indices]).all()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"tokens": np.zeros((3, 4, 2))}, "lacks array"),
        ({"tokens": np.zeros((3, 4)), "num_tokens": np.full(3, 2)}, "expected tokens"),
        ({"tokens": np.zeros((3, 4, 2)), "num_tokens": np.array([2, 1, 3])}, "num_tokens must"),
        ({"tokens": np.full((2, 4, 2), np.nan), "num_tokens": np.array([2, 2])}, "non-finite"),
        ({"tokens": np.zeros((2, 4, 2)), "num_tokens": np.array([2.5, 3])}, "whole numbers"),
        ({"tokens": np.zeros((2, 4, 2), bool), "num_tokens": np.array([2, 3])}, "numbers"),
        ({"tokens": np.zeros((2, 4, 2), complex), "num_tokens": np.array([2, 3])}, "numbers"),
        ({"tokens": np.zeros((0, 4, 2)), "num_tokens": np.zeros(0, int)}, "no token sets"),
    ],
)
def test_bad_token_files_are_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        TokenFileGenerator(path=path)


def test_train_on_a_token_file_then_evaluate(tmp_path, tokens_file):
    reinforce, evaluate = load_script("reinforce"), load_script("evaluate")
    common = {
        "tokens": str(tokens_file),
        "stage_steps": (1, 2, 2),
        "num_envs": 8,
        "eval_every": 5,
        "image_every": 5,
        "hidden_dim": 16,
        "runs_dir": str(tmp_path / "runs"),
        "progress": False,
    }
    run = reinforce.main(reinforce.Args(**common, run_name="mine"))
    stored = json.loads((run / "args.json").read_text())
    assert stored["env_id"] == "HTM-Tokens-v0" and stored["tokens"] == str(tokens_file)
    assert stored["embed_dim"] == 2 * 12 * 2  # twice the numbers of the largest set
    res = evaluate.main(evaluate.Args(checkpoint=str(run), proximity=True))
    assert res["data"] == "sets_test" and res["greedy"]["instances"] == 4  # held out
    assert res["proximity"]["recovered"] == 1.0  # clusters 100 px apart, points 1 px
    wide = tmp_path / "wide.npz"
    np.savez(wide, tokens=np.zeros((2, 3, 5)), num_tokens=np.array([2, 3]))
    with pytest.raises(SystemExit, match="same token width"):
        reinforce.main(reinforce.Args(**common, test_tokens=str(wide), run_name="w"))
    with pytest.raises(SystemExit, match="drop --env-id"):
        reinforce.main(reinforce.Args(**common, env_id="HTM-Trees-v0", run_name="t"))
    with pytest.raises(SystemExit, match="not a readable"):
        reinforce.main(reinforce.Args(**{**common, "tokens": str(tmp_path / "no.npz")}))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mine"]  # no side effects


def test_make_blobs_writes_the_reference_layout_and_never_overwrites(tmp_path):
    blobs = load_script("make_blobs")
    args = blobs.Args(train_sets=5, test_sets=2, out_dir=str(tmp_path))
    train, _ = blobs.main(args)
    gen = TokenFileGenerator(path=train)
    assert gen.max_tokens == 9 and gen.constituents(9)[:3] == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    before = train.read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        blobs.main(args)
    assert train.read_bytes() == before
