"""Root densities and classifier-guided unmerging (htm_gym.generation.roots)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htm_gym.generation.roots import (
    GaussianMixtureRoots,
    KernelDensityRoots,
    generate,
    load_sampler,
    save_sampler,
    unmerge_samples,
)
from htm_gym.nets import HTMConfig, make_model


def _model(seed: int = 0):
    return make_model(HTMConfig(token_dim=4, embed_dim=6, hidden_dim=16), seed=seed)


def _sequential_unmerge(model, root, max_steps):
    """The original's one-sample queue (report 3.8.2), as the reference."""
    queue, leaves = [root], []
    for k in range(max_steps):
        if k >= len(queue):
            break
        node = queue[k]
        if torch.softmax(model.classifier(node), -1)[1] >= 0.5:
            queue.extend(model.unmerge(node[None]))
            queue[-2:] = [queue[-2][0], queue[-1][0]]
        else:
            leaves.append(node)
    return model.unlift(torch.stack(leaves)) if leaves else torch.zeros(0, 4)


@torch.no_grad()
def test_batched_unmerging_equals_the_sequential_queue():
    # float64: a batched and a one-row product differ in the last float32 bits, enough to
    # flip a leaf/internal call that lies near the threshold (seen once in a full run)
    model = _model(3).double()
    torch.nn.init.normal_(model.classifier.fc3.weight, std=2.0)  # mixed leaf/internal calls
    torch.nn.init.zeros_(model.classifier.fc3.bias)
    gen = torch.Generator().manual_seed(0)
    roots = torch.randn(64, 6, generator=gen, dtype=torch.float64, device="cpu")
    roots = roots.to(torch.get_default_device())  # where the model is (the suite's --device)
    out = unmerge_samples(model, roots, max_steps=9)
    for i in range(len(roots)):
        ref = _sequential_unmerge(model, roots[i], 9)
        assert out.batch.num_tokens[i] == len(ref)
        np.testing.assert_allclose(out.batch[i], ref.cpu().numpy(), atol=1e-5)
    assert len(np.unique(out.batch.num_tokens)) > 1


@torch.no_grad()
def test_sampling_terminates_on_an_untrained_model():
    model = _model()
    torch.nn.init.constant_(model.classifier.fc3.bias, 0.0)
    model.classifier.fc3.bias[1] = 100.0  # every node "internal": only the step limit stops
    out = unmerge_samples(model, torch.randn(32, 6), max_steps=10)
    assert out.truncated.all()
    assert (out.batch.num_tokens == 0).all()
    with pytest.raises(ValueError, match="max_steps"):
        unmerge_samples(model, torch.randn(2, 6), max_steps=0)


def test_gmm_picks_components_by_bic_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    roots = np.concatenate([c + rng.standard_normal((300, 3)) for c in centres])
    gmm = GaussianMixtureRoots.fit(roots, range(1, 7), seed=0)
    assert gmm.num_components == 3
    assert gmm.bic.shape == gmm.aic.shape == (6,)
    save_sampler(gmm, tmp_path / "s.pt")
    loaded = load_sampler(tmp_path / "s.pt")
    a = gmm.sample(50, np.random.default_rng(7))
    b = loaded.sample(50, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    model = make_model(HTMConfig(token_dim=4, embed_dim=3, hidden_dim=16), seed=0)
    s1 = generate(model, gmm, 40, seed=5, max_steps=11)
    s2 = generate(model, loaded, 40, seed=5, max_steps=11)
    np.testing.assert_array_equal(s1.batch.tokens, s2.batch.tokens)


def test_kernel_density_jitters_stored_roots_and_round_trips(tmp_path):
    roots = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    exact = KernelDensityRoots.fit(roots, bandwidth=0.0).sample(200, np.random.default_rng(1))
    assert (np.abs(exact[:, None] - roots[None]).max(-1).min(1) == 0).all(), "each is a root"
    kde = KernelDensityRoots.fit(roots, bandwidth=0.1)
    a = kde.sample(400, np.random.default_rng(2))
    offset = a - roots[np.random.default_rng(2).integers(50, size=400)]
    assert 0.08 < offset.std() < 0.12
    save_sampler(kde, tmp_path / "k.pt")
    np.testing.assert_array_equal(
        load_sampler(tmp_path / "k.pt").sample(9, np.random.default_rng(3)),
        kde.sample(9, np.random.default_rng(3)),
    )
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensityRoots.fit(roots, bandwidth=-0.1)
    with pytest.raises(ValueError, match="roots"):
        KernelDensityRoots.fit(roots[:0])


def test_load_sampler_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_sampler(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a sampler")
    with pytest.raises(ValueError, match="not a readable root sampler"):
        load_sampler(bad)
    with pytest.raises(ValueError, match="finite"):
        GaussianMixtureRoots.fit(np.full((10, 2), np.nan))


def test_a_sampler_of_another_width_is_named():
    model = make_model(HTMConfig(token_dim=2, embed_dim=8, hidden_dim=8), seed=0)
    sampler = KernelDensityRoots(np.zeros((5, 4), np.float32), bandwidth=0.1)
    with pytest.raises(ValueError, match="4-d roots"):
        generate(model, sampler, 3, seed=0, max_steps=5)
