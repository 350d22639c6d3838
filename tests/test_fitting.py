"""Direct tests of fitting a run's root sampler (htm_gym.generation.fitting)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.policies import Actor
from htm_gym.datasets import CrossesGenerator
from htm_gym.generation.fitting import fit_root_sampler, fitting_instances, run_sampler
from htm_gym.generation.roots import GaussianMixtureRoots, KernelDensityRoots
from htm_gym.nets import HTMConfig, make_model


@pytest.fixture(scope="module")
def setup():
    gen = CrossesGenerator()
    cfg = HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16, token_loc=32, token_scale=8)
    model = make_model(cfg, seed=0)
    return model, gen, Actor(model, "learned", greedy=True)


def test_fitting_instances_are_a_fixed_draw_per_seed():
    gen = CrossesGenerator()
    a, b, c = (fitting_instances(gen, 10, s) for s in (0, 0, 1))
    assert np.array_equal(a.num_tokens, b.num_tokens)
    assert np.allclose(np.nan_to_num(a.tokens), np.nan_to_num(b.tokens))
    assert not np.allclose(np.nan_to_num(a.tokens), np.nan_to_num(c.tokens))


def test_fit_root_sampler_kinds(setup):
    model, gen, actor = setup
    gmm = fit_root_sampler(model, gen, actor, num_roots=60, components=[1, 2])
    kde = fit_root_sampler(model, gen, actor, num_roots=60, kind="kde", bandwidth=0.0)
    assert isinstance(gmm, GaussianMixtureRoots) and isinstance(kde, KernelDensityRoots)
    assert gmm.sample(5, np.random.default_rng(0)).shape == (5, 8)
    assert kde.roots.shape == (60, 8)
    with pytest.raises(ValueError, match="kind"):
        fit_root_sampler(model, gen, actor, kind="flow")


def test_run_sampler_fits_once_then_reuses(setup, tmp_path):
    model, gen, actor = setup
    kw = dict(num_roots=40, components=[1, 2])
    first, path, fitted = run_sampler(tmp_path, model, gen, actor, **kw)
    assert fitted and path == tmp_path / "root_sampler.pt" and path.is_file()
    again, path2, fitted2 = run_sampler(tmp_path, model, gen, actor, **kw)
    assert not fitted2 and path2 == path
    assert np.allclose(
        first.sample(3, np.random.default_rng(1)), again.sample(3, np.random.default_rng(1))
    )
    _, path3, fitted3 = run_sampler(tmp_path, model, gen, actor, refit=True, **kw)
    assert fitted3 and path3 == tmp_path / "root_sampler.1.pt", "a refit never overwrites"
    _, given, fitted4 = run_sampler(tmp_path, model, gen, actor, path=str(path3))
    assert not fitted4 and given == path3
