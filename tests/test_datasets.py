from __future__ import annotations

import numpy as np
import pytest

from htm_gym.datasets import (
    CrossesGenerator,
    TreesGenerator,
    load_token_file,
    make_generator,
    validate_tokens,
)


def _segments(batch):
    real = np.arange(batch.tokens.shape[1]) < batch.num_tokens[:, None]
    return batch.tokens[real]


def _cross_angles(batch):
    """Angle between the two segments of every cross, in degrees within [0, 180)."""
    t = batch.tokens
    first, second = t[:, 0::2], t[:, 1::2]
    a1 = np.arctan2(first[..., 3] - first[..., 1], first[..., 2] - first[..., 0])
    a2 = np.arctan2(second[..., 3] - second[..., 1], second[..., 2] - second[..., 0])
    diff = np.degrees(a2 - a1) % 360
    return diff[~np.isnan(diff)]


def test_crosses_match_reference_statistics(reference_dir):
    ref = load_token_file(str(reference_dir / "crosses_test_20000.npz"))
    ours = CrossesGenerator().sample(np.random.default_rng(0), 20000)
    for batch in (ref, ours):
        seg = _segments(batch)
        lengths = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
        assert np.allclose(lengths, 10.0, atol=2e-3)
        mids = 0.5 * (seg[:, :2] + seg[:, 2:])
        assert mids.min() >= -1e-3 and mids.max() < 128.0
        assert seg.min() > -5.01 and seg.max() < 133.01
        diff = _cross_angles(batch)
        assert np.allclose(diff, np.round(diff), atol=0.02), "angles are integer degrees"
        assert diff.min() >= 20 - 0.02 and diff.max() <= 160 + 0.02
        # 4-decimal rounding, as the original generator stored tokens
        assert np.allclose(seg, np.round(seg, 4), atol=2e-5)
    # P distribution: a third each of 2, 4, 6 in both
    for batch in (ref, ours):
        freq = np.bincount(batch.num_tokens, minlength=7)[[2, 4, 6]] / len(batch)
        assert np.all(np.abs(freq - 1 / 3) < 0.02), freq
    # coordinate and separation distributions agree (two-sample quantiles)
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.allclose(np.quantile(_segments(ref), q), np.quantile(_segments(ours), q), atol=2.0)
    assert np.allclose(
        np.quantile(_cross_angles(ref), q), np.quantile(_cross_angles(ours), q), atol=3
    )


def test_trees_rebuild_every_reference_tree(reference_dir):
    """Our generator maps (root, direction) to exactly the reference trees' geometry."""
    ref = load_token_file(str(reference_dir / "trees_narrow_test_20000.npz"))
    t = ref.tokens.astype(np.float64)
    to_left, to_right = t[:, 1] - t[:, 0], t[:, 4] - t[:, 0]
    direction = np.degrees(np.arctan2(*(to_left + to_right)[:, ::-1].T)) % 360
    assert np.abs(direction - np.round(direction)).max() < 1e-2, "integer degrees"
    draws = np.stack(
        [(t[:, 0, 0] - 96) / 64, (t[:, 0, 1] - 96) / 64, (np.round(direction) % 360 + 0.5) / 360],
        axis=1,
    )
    rebuilt = TreesGenerator().build(draws)
    assert np.abs(rebuilt.tokens - ref.tokens).max() < 1e-3
    assert ((draws[:, :2] >= 0) & (draws[:, :2] < 1)).all(), "root in the central square"


def test_wide_trees_and_generator_params():
    wide = TreesGenerator("wide").sample(np.random.default_rng(1), 5)
    child = wide.tokens[:, 1] - wide.tokens[:, 0]
    grandchild = wide.tokens[:, 2] - wide.tokens[:, 1]
    assert np.allclose(np.hypot(*child.T), 90, atol=1e-3)
    assert np.allclose(np.hypot(*grandchild.T), 45, atol=1e-3)  # factor 0.5
    two = CrossesGenerator(num_crosses=(2, 2), separation=(90, 90), length=4)
    b = two.sample(np.random.default_rng(0), 10)
    assert (b.num_tokens == 4).all()
    assert np.allclose(_cross_angles(b) % 180, 90, atol=0.01)


def test_constituents():
    c = CrossesGenerator()
    assert c.constituents(2) == [(0, 1)]
    assert c.constituents(6) == [(0, 1), (2, 3), (4, 5), (0, 1, 2, 3, 4, 5)]
    assert TreesGenerator().constituents(7) == [tuple(range(7)), (1, 2, 3), (4, 5, 6)]
    assert len(TreesGenerator(height=4).constituents(15)) == 7


def test_sample_equals_sequential_draws():
    g = CrossesGenerator()
    batch = g.sample(np.random.default_rng(3), 4)
    rng = np.random.default_rng(3)
    one_by_one = [g.build(g.draw(rng)[None]) for _ in range(4)]
    for i, b in enumerate(one_by_one):
        np.testing.assert_array_equal(batch[i], b[0])


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (np.zeros(4), "rank 1"),
        (np.zeros((3, 5)), "4 values per token"),
        (np.zeros((1, 4)), "P=1"),
        (np.zeros((7, 4)), "P=7"),
        (np.array([[0, 0, 1, np.nan], [1, 1, 1, 1]]), "finite"),
    ],
)
def test_validate_tokens_errors(tokens, message):
    with pytest.raises(ValueError, match=message):
        validate_tokens(tokens, 4, 6)


def test_token_file_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_token_file(str(bad))
    partial = tmp_path / "partial.npz"
    np.savez(partial, tokens=np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="num_tokens"):
        load_token_file(str(partial))
    with pytest.raises(ValueError, match="unknown dataset"):
        make_generator("mnist")
    with pytest.raises(ValueError, match="bad argument"):
        make_generator("crosses", colour="red")
    with pytest.raises(ValueError, match="num_crosses"):
        CrossesGenerator(num_crosses=(3, 1))


def test_jittered_trees_statistics():
    gen = make_generator("trees", variant="jittered")
    narrow = make_generator("trees")
    assert gen.draw_size == 3 + 2 * 6 and narrow.draw_size == 3  # reference draws unchanged
    b = gen.sample(np.random.default_rng(0), 4000)
    tok = b.tokens.astype(np.float64)
    # Edges in token order (parent, child, nominal length): the root's two branches of 90 px,
    # then each child's two of 13.5 px.
    edges = [(0, 1, 90.0), (0, 4, 90.0), (1, 2, 13.5), (1, 3, 13.5), (4, 5, 13.5), (4, 6, 13.5)]
    ratios = np.stack([np.linalg.norm(tok[:, c] - tok[:, p], axis=1) / d for p, c, d in edges])
    assert ratios.min() >= 0.75 - 1e-4 and ratios.max() <= 1.25 + 1e-4
    assert abs(ratios.mean() - 1) < 0.01 and abs(ratios.std() - 0.25 / np.sqrt(3)) < 0.01
    # The two root branches open 25 degrees apart, give or take both branches' jitter.
    v1, v2 = tok[:, 1] - tok[:, 0], tok[:, 4] - tok[:, 0]
    cos = (v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)
    opening = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    assert opening.min() >= 25 - 12 - 1e-3 and opening.max() <= 25 + 12 + 1e-3
    assert opening.std() > 2  # not the narrow set's fixed 25
    assert gen.constituents(7) == narrow.constituents(7)
    with pytest.raises(NotImplementedError):
        gen.is_valid(tok[0])
