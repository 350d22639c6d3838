"""HTM networks (report section 3.1): lifter/unlifter, merger/unmerger, classifier, policy.

Small modules in the nanoGPT manner; shapes in comments use B batch, S token slots,
T token width, E embedding width, H hidden width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from htm_gym.files import atomic_save


@dataclass(frozen=True)
class HTMConfig:
    """Sizes of the HTM networks and the fixed token normalisation.

    ``token_loc``/``token_scale`` map tokens to roughly unit range inside the model, so
    losses and rewards are in normalised units while everything outside stays in pixels.
    """

    token_dim: int
    embed_dim: int = 18
    hidden_dim: int = 256
    policy_hidden_dim: int = 64
    classifier_hidden_dim: int = 256
    token_loc: float = 0.0
    token_scale: float = 1.0
    noise_std: float = 0.01
    policy_kind: str = "mlp"  # "mlp" (report 3.1) or "bilinear" (cheaper, for large P)
    # A linear shortcut around the merger/unmerger MLPs. Much of what they must learn is
    # linear (a cross's centre and directions are linear in its two segments), which a
    # ReLU stack only approximates (crosses: about 3x less reconstruction error in the
    # default budget); False is the report's plain three-layer MLP.
    linear_skip: bool = True
    # Compression by level: a merged node over n = 2, 3, ... tokens keeps only its first
    # node_widths[n - 2] coordinates (the rest are zero), so a low-level merge must drop
    # information unless its tokens share structure; nodes over more tokens than listed,
    # and leaves, keep all E. () (the report's) keeps every node E wide.
    node_widths: tuple[int, ...] = ()
    # Whether the widths also cut the decoder's nodes. False cuts the encoder's alone: every
    # active node still carries only its width (what the skip-path reward judges), but a
    # root that holds everything can pass it all down (what reconstruction needs).
    narrow_decoder: bool = True
    # A power-limited channel: every node (leaf or merged) is b * tanh(x / b) before its
    # noise, so the networks cannot outscale the noise and each node carries a bounded
    # amount of information; a merge that must keep more loses more. 0 (the report's):
    # unbounded.
    node_bound: float = 0.0

    def __post_init__(self) -> None:
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(
                f"HTMConfig.policy_kind must be one of {POLICY_KINDS}, got {self.policy_kind!r}"
            )
        for name in ("token_dim", "embed_dim", "hidden_dim", "policy_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"HTMConfig.{name} must be a positive integer")
        if self.classifier_hidden_dim < 1:
            raise ValueError("HTMConfig.classifier_hidden_dim must be a positive integer")
        if not self.token_scale > 0:
            raise ValueError(f"HTMConfig.token_scale must be positive, got {self.token_scale}")
        if not self.node_bound >= 0:
            raise ValueError(f"HTMConfig.node_bound must be >= 0 (0: off), got {self.node_bound}")
        if not self.noise_std >= 0:
            raise ValueError(f"HTMConfig.noise_std must be >= 0, got {self.noise_std}")
        if not all(1 <= w <= self.embed_dim for w in self.node_widths):
            raise ValueError(
                f"HTMConfig.node_widths must lie in 1..embed_dim={self.embed_dim}, "
                f"got {self.node_widths}"
            )


class MLP(nn.Module):
    """Three linear layers with ReLU after the first two (report 3.1.2), optionally plus a
    linear shortcut from input to output."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, skip: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.fc3 = nn.Linear(d_hidden, d_out)
        self.skip = nn.Linear(d_in, d_out, bias=False) if skip else None

    def forward(self, x: Tensor) -> Tensor:  # (..., d_in) -> (..., d_out)
        out = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
        return out if self.skip is None else out + self.skip(x)


POLICY_KINDS = ("mlp", "bilinear")
# Pair-hidden activations (rows x I x J x H) computed at once outside autograd: 1 MB of
# float32 stays in cache, where one (4096, 7, 7, 256) block is 200 MB of fresh pages per
# layer (greedy trees evaluation with the original's 256-wide scorer: 1.3x faster, median).
PAIR_CHUNK = 1 << 18
GRAD_PAIR_CHUNK = 1 << 22  # under autograd, per all_pairs call (memory at large P)


class PairScorer(MLP):
    """Policy network: one logit for an ordered pair ``(a, b)`` of embedded tokens.

    ``forward(cat(a, b))`` is the report's concatenated form. ``score_block`` gives the same
    function on every (left, right) pair of two node tables, splitting the first layer into
    per-token projections: the first layer costs (I + J) token products instead of I * J
    pair products. Without gradients both score in chunks (of batch rows, then of table
    rows at large P) of about ``PAIR_CHUNK`` pair activations of width H; under autograd
    every activation is kept for the backward anyway, so chunks would only add operations.
    """

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__(2 * embed_dim, hidden_dim, 1)
        self.embed_dim = embed_dim

    def score_block(self, left: Tensor, right: Tensor) -> Tensor:  # (B,I,E),(B,J,E)->(B,I,J)
        b, i, _ = left.shape
        per_row = i * right.shape[1] * self.fc1.out_features
        rows = max(1, PAIR_CHUNK // max(per_row, 1))
        if rows >= b or torch.is_grad_enabled():
            return self._block(left, right)
        return torch.cat(
            [self._block(left[k : k + rows], right[k : k + rows]) for k in range(0, b, rows)]
        )

    def _block(self, left: Tensor, right: Tensor) -> Tensor:  # (B,I,E),(B,J,E)->(B,I,J)
        w_a, w_b = self.fc1.weight.split(self.embed_dim, dim=1)  # (H, E) each
        first = left @ w_a.T + self.fc1.bias  # (B, I, H), as the pair's left member
        second = right @ w_b.T  # (B, J, H), as the right member
        h = torch.relu(first[:, :, None, :] + second[:, None, :, :])  # (B, I, J, H)
        return self.fc3(torch.relu(self.fc2(h))).squeeze(-1)

    def all_pairs(self, nodes: Tensor) -> Tensor:  # (B, S, E) -> (B, S, S)
        b, s, _ = nodes.shape
        h = self.fc1.out_features
        if torch.is_grad_enabled():  # chunks of table rows bound the temporaries at large P
            rows = max(1, GRAD_PAIR_CHUNK // max(b * s * h, 1))
        else:  # score_block chunks the batch; a row's own table only past PAIR_CHUNK
            rows = max(1, PAIR_CHUNK // max(s * h, 1))
        if rows >= s:
            return self.score_block(nodes, nodes)
        return torch.cat(
            [self.score_block(nodes[:, i : i + rows], nodes) for i in range(0, s, rows)], 1
        )


class BilinearPairScorer(nn.Module):
    """A cheaper policy for large P: ``logit(a, b) = q(a) . k(b) / sqrt(d) + u(a) + v(b)``.

    A whole (S, S) table is one batched matrix product, O(S^2 d) with no pair-hidden
    activations; a row or column after a merge is O(S d).
    """

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(embed_dim, hidden_dim + 1)  # last column: the left bias u(a)
        self.k = nn.Linear(embed_dim, hidden_dim + 1, bias=False)  # last: v(b)
        self.scale = hidden_dim**-0.5

    def score_block(self, left: Tensor, right: Tensor) -> Tensor:  # (B,I,E),(B,J,E)->(B,I,J)
        q, u = self.q(left).split([self.q.out_features - 1, 1], -1)  # (B,I,d), (B,I,1)
        k, v = self.k(right).split([self.k.out_features - 1, 1], -1)  # (B,J,d), (B,J,1)
        return q @ k.transpose(1, 2) * self.scale + u + v.transpose(1, 2)

    def all_pairs(self, nodes: Tensor) -> Tensor:  # (B, S, E) -> (B, S, S)
        return self.score_block(nodes, nodes)


class HTMModel(nn.Module):
    """The six HTM networks plus the fixed token normalisation (buffers, so they save)."""

    def __init__(self, config: HTMConfig) -> None:
        super().__init__()
        self.config = config
        e, h = config.embed_dim, config.hidden_dim
        self.lifter = nn.Linear(config.token_dim, e)
        self.unlifter = nn.Linear(e, config.token_dim)
        self.merger = MLP(2 * e, h, e, skip=config.linear_skip)
        self.unmerger = MLP(e, h, 2 * e, skip=config.linear_skip)
        self.classifier = MLP(e, config.classifier_hidden_dim, 2)  # logits: (leaf, internal)
        scorer = PairScorer if config.policy_kind == "mlp" else BilinearPairScorer
        self.policy = scorer(e, config.policy_hidden_dim)
        self.register_buffer("token_loc", torch.tensor(float(config.token_loc)))
        self.register_buffer("token_scale", torch.tensor(float(config.token_scale)))
        # Width of a node by its token count (index k + 2: past the listed sizes); derived
        # from the config, so not saved.
        widths = [e, e, *config.node_widths, e]
        self.register_buffer("node_width", torch.tensor(widths), persistent=False)
        self.apply(_glorot)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def normalize(self, tokens: Tensor) -> Tensor:
        return (tokens - self.token_loc) / self.token_scale

    def denormalize(self, tokens: Tensor) -> Tensor:
        return tokens * self.token_scale + self.token_loc

    def bound(self, nodes: Tensor) -> Tensor:  # (..., E) -> (..., E)
        b = self.config.node_bound
        return nodes if b == 0 else b * torch.tanh(nodes / b)

    def lift(self, tokens: Tensor) -> Tensor:  # (..., T) in token units -> (..., E)
        return self.bound(self.lifter(self.normalize(tokens)))

    def unlift(self, nodes: Tensor) -> Tensor:  # (..., E) -> (..., T) in token units
        return self.denormalize(self.unlifter(nodes))

    def merge(self, left: Tensor, right: Tensor) -> Tensor:  # (B, E), (B, E) -> (B, E)
        return self.merge_pair(torch.cat([left, right], dim=-1))

    def merge_pair(self, pair: Tensor) -> Tensor:  # (..., 2E) -> (..., E), noise-free
        return self.bound(self.merger(pair))

    def unmerge(self, parent: Tensor) -> tuple[Tensor, Tensor]:  # (B, E) -> 2 x (B, E)
        out = self.unmerger(parent)
        return out[..., : self.embed_dim], out[..., self.embed_dim :]

    def narrow(self, nodes: Tensor, sizes: Tensor) -> Tensor:  # (..., E), (...) -> (..., E)
        """``nodes`` cut to the width of merged nodes over ``sizes`` tokens
        (``HTMConfig.node_widths``); unchanged when that is empty."""
        widths = self.config.node_widths
        if not widths:
            return nodes
        width = self.node_width[sizes.clamp(max=len(widths) + 2)]
        return nodes * (torch.arange(self.embed_dim, device=nodes.device) < width[..., None])


def _glorot(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or torch's default device (``torch.set_default_device``) when None."""
    return torch.get_default_device() if device is None else torch.device(device)


def make_model(
    config: HTMConfig, seed: int | None = 0, device: str | torch.device | None = None
) -> HTMModel:
    """A freshly initialised model on ``device`` (None: torch's default device); with a seed,
    the same weights on every machine and device, since they are drawn on the CPU."""
    with torch.device("cpu"):
        if seed is None:
            model = HTMModel(config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = HTMModel(config)
    return model.to(resolve_device(device))


MODEL_KEY = "model"


def save_model(model: HTMModel, path: str | Path, **extra: object) -> None:
    """Write ``{"config", "model", **extra}`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"config": asdict(model.config), MODEL_KEY: model.state_dict(), **extra}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = None) -> dict:
    """Read a checkpoint dict (a file, or a run folder's ``checkpoint.pt``), with a clear
    error when the file is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=resolve_device(map_location), weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise ValueError(
            f"{path}: not a readable htm-gym checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(ckpt, dict) or "config" not in ckpt or MODEL_KEY not in ckpt:
        raise ValueError(
            f"{path}: not an htm-gym checkpoint (needs 'config' and '{MODEL_KEY}' keys)"
        )
    return ckpt


def config_from_dict(config: dict) -> HTMConfig:
    """The config a checkpoint stored. Checkpoints from before the linear shortcut existed
    lack the field and were plain MLPs."""
    config = {"linear_skip": False, **config}
    config["node_widths"] = tuple(config.get("node_widths", ()))  # saved as a list
    return HTMConfig(**config)


def load_model(path: str | Path, map_location: str | torch.device | None = None) -> HTMModel:
    """The model of a checkpoint file or run folder."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path, map_location)


def model_from_checkpoint(
    ckpt: dict, path: str | Path, map_location: str | torch.device | None = None
) -> HTMModel:
    """The model a loaded checkpoint dict holds (``path`` names it in errors)."""
    try:
        with torch.device("cpu"):
            model = HTMModel(config_from_dict(ckpt["config"]))
        model.load_state_dict(ckpt[MODEL_KEY])
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: checkpoint does not match the HTM model ({e})") from e
    return model.to(resolve_device(map_location))
