"""REINFORCE with baseline, co-training the HTM networks from the episodes it acts in.

The env (no gradients) merges and hands back one-step-loss rewards; :meth:`update` replays
the recorded merges through ``htm_gym.core`` with gradients (same model, same noise, so
the same states), which yields in one pass: the policy's log-probabilities and entropies
at every step, the step losses, and the teacher-forced unmerging for the HTM loss.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from agents import losses
from agents.advantages import (
    BASELINES,
    BaselineKind,
    RunningBaseline,
    area_returns,
    discounted_returns,
    leave_one_out,
)
from agents.base import EpisodeBatch
from agents.distributed import Ranks
from agents.losses import masked_log_probs
from agents.policies import POLICIES, Actor, IncrementalActor, pair_logits, sample
from agents.schedules import Schedule, Stage
from htm_gym import core
from htm_gym.nets import HTMModel

EntropyLossKind = Literal["batch", "episode"]
ENTROPY_LOSSES: tuple[str, ...] = get_args(EntropyLossKind)
CreditKind = Literal["discounted", "area"]
CREDITS: tuple[str, ...] = get_args(CreditKind)


@dataclass(frozen=True)
class ReinforceConfig:
    policy: str = "learned"  # learned | heuristic | random
    lambda_entropy: float = 3.0
    policy_lr: float = 3e-3
    policy_l2: float = 1e-4
    classifier_lr: float = 1e-3
    # Share of each update's episodes whose down-tree nodes train the classifier (every
    # 1/share-th by global row, an i.i.d. sample). A quarter saves about 8% of a crosses
    # update and kept its reference accuracy >= 0.9999 (docs/results.md); 1: every node.
    classifier_share: float = 0.25
    temperature_lr: float = 0.05  # heuristic policy's temperature optimiser (report 3.4.3)
    entropy_floor: float = 5e-4  # below it the temperature optimiser pauses (report 3.4.3)
    # Running baseline: one buffer per merge depth ("depth"), or one over every depth that
    # includes the batch it normalises ("pooled", the report's learner, with 10,000 rewards).
    baseline: BaselineKind = "depth"
    baseline_size: int = 50_000  # rewards kept per buffer
    # Episodes come in groups of this many consecutive rows on one token set (see
    # EpisodeCollector.collect_group_round); each step's reward is compared with the mean of
    # the group's other episodes at that depth (leave-one-out), so an image's difficulty no
    # longer masks how good the action was. 1: the report's running baseline alone.
    group_size: int = 1
    # Credit of a merge: its own reward plus gamma^k times the reward k merges later. 0 is the
    # report's one-step reward; above 0 a merge also answers for the merges it forces later
    # (two crossed pairs are cheap to form but then costly to merge).
    gamma: float = 1.0
    # "area": credit is the area under the episode's loss curve from the merge on
    # (advantages.area_returns) instead of a discounted sum; gamma must then stay 1.
    credit: CreditKind = "discounted"
    loss_power: float = 0.01
    # Per optimiser group, so one loss cannot shrink another's step; 0: no clipping (the
    # report's learner).
    grad_clip: float = 1.0
    # The entropy term |H - target|: of the batch's mean entropy ("batch"), or the mean over
    # episodes of each one's own ("episode", the report's L1 loss per episode).
    entropy_loss: EntropyLossKind = "batch"
    # L_r weighted per token, as the pooled reconstruction MSE is (see losses.Weights).
    pooled_recon: bool = False
    # Recompute each step's pair logits in the backward pass instead of keeping them: memory
    # per step O(S E) instead of O(S^2) (or O(S^2 H) for the MLP scorer); for large P.
    checkpoint_policy: bool = False
    # The policy learns to reproduce the episodes' merges (behaviour cloning: maximise log pi
    # of each merge made; no advantage, no entropy target): for episodes a teacher chose
    # (agents.teacher), whose order the networks then learn to decode.
    imitation: bool = False
    # With imitation: every (1 / share)-th row (by global row) is played by this learner's own
    # sampled policy instead of the teacher (agents.teacher.follow), so the networks also
    # learn to decode the orders the policy itself makes, its departures from the teacher
    # included; those rows do not train the imitation.
    own_share: float = 0.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.baseline_size < 2 or self.grad_clip < 0:
            raise ValueError("baseline_size must be >= 2 and grad_clip >= 0 (0: off)")
        if self.baseline not in BASELINES or self.entropy_loss not in ENTROPY_LOSSES:
            raise ValueError(
                f"baseline must be one of {BASELINES} and entropy_loss one of {ENTROPY_LOSSES}; "
                f"got {self.baseline!r}, {self.entropy_loss!r}"
            )
        if not 0 < self.classifier_share <= 1:
            raise ValueError(f"classifier_share must be in (0, 1], got {self.classifier_share}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.credit not in CREDITS or (self.credit == "area" and self.gamma != 1):
            raise ValueError(
                f"credit must be one of {CREDITS}, and 'area' takes no gamma (leave it at 1); "
                f"got {self.credit!r} with gamma {self.gamma}"
            )
        if self.imitation and self.policy != "learned":
            raise ValueError(f"imitation trains the learned policy, not {self.policy!r}")
        if not 0 <= self.own_share < 1 or (self.own_share and not self.imitation):
            raise ValueError(
                f"own_share must be in [0, 1) and needs imitation, got {self.own_share}"
            )
        if not (self.policy_lr > 0 and self.policy_l2 >= 0):
            raise ValueError(
                f"need policy_lr > 0 and policy_l2 >= 0; got {self.policy_lr}, {self.policy_l2}"
            )


class ReinforceLearner:
    """The report's learner: learned, heuristic or random merge policy + HTM co-training.

    Implements :class:`agents.base.Learner`.
    """

    def __init__(
        self,
        model: HTMModel,
        schedule: Schedule,
        config: ReinforceConfig | None = None,
        seed: int = 0,
        ranks: Ranks | None = None,
    ) -> None:
        self.model = model
        # Data-parallel training: this rank's place; each rank updates from its own rows.
        self.ranks = ranks or Ranks()
        self.schedule = schedule
        self.config = config or ReinforceConfig()
        self.device = next(model.parameters()).device
        self.step = 0
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        htm = [model.lifter, model.unlifter, model.merger, model.unmerger]
        self.htm_opt = torch.optim.Adam([p for m in htm for p in m.parameters()], lr=1e-3)
        self.cls_opt = torch.optim.Adam(model.classifier.parameters(), lr=self.config.classifier_lr)
        self.policy_opt = torch.optim.Adam(self.policy_parameters(), lr=self.config.policy_lr)
        self.log_temperature = torch.zeros((), device=self.device, requires_grad=True)
        self.temp_opt = torch.optim.Adam([self.log_temperature], lr=self.config.temperature_lr)
        self.baseline: RunningBaseline | None = None  # sized by the first batch's slots
        self.actor: Actor | IncrementalActor = Actor(
            model,
            self.config.policy,
            self.temperature,
            generator=self.generator,
            scorer=self.pair_logits,
        )
        if (
            self.config.policy == "learned"
            and type(self).pair_logits is ReinforceLearner.pair_logits
        ):
            # The built-in scorer's logits of a pair do not depend on the other nodes, so
            # only the merged slot's pairs change per step (the same distribution, fewer
            # pair scores).
            self.actor = IncrementalActor(model, greedy=False, generator=self.generator)

    # --- acting ------------------------------------------------------------------------
    def temperature(self) -> Tensor:
        if self.config.policy == "heuristic":
            return self.log_temperature.exp()
        return torch.ones((), device=self.device)

    def act(self, obs: dict[str, Tensor], action_mask: Tensor, greedy: bool = False) -> Tensor:
        share = self._stage().uniform_share
        if greedy or not share:
            return self.actor.act(obs, action_mask, greedy)
        legal = action_mask.bool()
        flat = torch.zeros(legal.shape, device=legal.device)
        uniform = sample(masked_log_probs(flat, legal), self.generator, False)
        if share == 1:  # no row is the policy's: skip scoring pairs
            return uniform
        rows = self._share_rows(len(uniform), share)
        return torch.where(rows, uniform, self.actor.act(obs, action_mask, greedy))

    def pair_logits(self, nodes: Tensor, active: Tensor) -> Tensor:
        """Logits of every ordered slot pair (B, S*S); subclasses swap the policy here."""
        return pair_logits(self.config.policy, self.model, nodes)

    def policy_parameters(self) -> list[nn.Parameter]:
        """What the policy optimiser trains (and the policy L2 penalises)."""
        return list(self.model.policy.parameters())

    # --- learning ----------------------------------------------------------------------
    def update(self, episodes: EpisodeBatch) -> dict[str, float]:
        sched, cfg = self.schedule, self.config
        stage = self._set_learning_rates()
        tau, target = sched.tau(self.step), sched.entropy_target(self.step)
        s = episodes.tokens.shape[1]
        if self.baseline is None:
            self.baseline = RunningBaseline(s - 1, cfg.baseline_size, cfg.baseline)
            self.baseline.to(self.device)
        # Weights this stage does not train build no autograd graph, so the backward skips
        # them (their gradients would be dropped anyway; the rest's are the same).
        with _without_grad(self._frozen_modules(stage)):
            forest = stage.lambda_forest > 0
            # One replay per token count P: a padded batch would spend the longest episode's
            # merges on every row (1.65x slower on crosses, `python train/bench_env.py`).
            groups = episodes.split_by_tokens()
            cls_rows, net_rows = self._row_split(episodes, groups, stage)
            parts = [
                self._replay(g, tau, s, r, forest) for g, r in zip(groups, cls_rows, strict=True)
            ]
            cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            if stage.uniform_share:  # the uniform rows' merges are not the policy's to learn from
                cat["valid"] = cat["valid"] & ~net_rows[:, None]
            if cfg.own_share:  # nor are its own rows' merges for its imitation
                own = _replay_order(self.own_rows(len(episodes)), episodes.num_tokens)
                cat["valid"] = cat["valid"] & ~own[:, None]
            signal = self._signal(cat, episodes)
            shared = self._shared_signal(signal, cat, episodes)
            metrics = self._htm_losses(cat, stage, s, net_rows)
            total = metrics["loss/htm"] + metrics["loss/classifier"]
            entropy, policy = self._policy_loss(cat, shared, target, metrics)
            if policy is not None:
                total = total + policy
            finite = self.ranks.all_agree(bool(torch.isfinite(total)), self.device)
            if not finite or not self._step(total, metrics, stage):
                return self._skip(metrics)
        if cfg.policy == "heuristic" and entropy is not None:
            metrics["policy/temperature"] = self._tune_temperature(entropy.detach(), target)
        self.baseline.push(shared[0], shared[1])
        # 0 where no merge was made (a stage of lifting only)
        valid = cat["valid"]
        rewards = torch.where(valid, cat["rewards"], 0).sum()
        metrics["reward/mean_step"] = rewards / valid.sum().clamp(min=1)
        out = _to_floats(metrics, self.device)
        out.update({"train/lr": sched.lr(self.step), "train/tau": tau, "train/skipped": 0.0})
        self.step += 1
        if isinstance(self.actor, IncrementalActor):
            self.actor.forget()  # its cached logits came from the old weights
        return out

    def _stage(self) -> Stage:
        return self.schedule.stages[self.schedule.stage_at(self.step)[0]]

    def _set_learning_rates(self) -> Stage:
        """This step's learning rates on every optimiser; returns the current stage."""
        sched, cfg = self.schedule, self.config
        stage = self._stage()
        for group in self.htm_opt.param_groups:
            group["lr"] = sched.lr(self.step)
        self.policy_lr = cfg.policy_lr * stage.policy_lr_scale
        for opt, base in ((self.policy_opt, self.policy_lr), (self.cls_opt, cfg.classifier_lr)):
            for group in opt.param_groups:
                group["lr"] = base and max(base * sched.lr_factor(self.step), sched.lr_floor)
        return stage

    def own_rows(self, n: int) -> Tensor:
        """(n,) bool: the rows of a teacher's round this learner plays itself (own_share)."""
        if not self.config.own_share:
            return torch.zeros(n, dtype=torch.bool, device=self.device)
        return self._share_rows(n, self.config.own_share)

    def _share_rows(self, n: int, share: float) -> Tensor:
        """(n,) bool: every (1 / share)-th of this rank's n rows by global row (rank * n +
        row), so N ranks pick the rows one process would; row 0 always (share > 0)."""
        i = self.ranks.rank * n + torch.arange(n, device=self.device, dtype=torch.float64)
        return torch.floor(i * share) > torch.floor((i - 1) * share)

    def _row_split(
        self, episodes: EpisodeBatch, groups: list[EpisodeBatch], stage: Stage
    ) -> tuple[list[Tensor], Tensor | None]:
        """Per token-count group (``groups``, from ``split_by_tokens``), the rows that train
        the classifier; and the rows, in that grouped order, that train the networks: the
        uniform rows where the stage has them, else all (None; the policy trains on the
        others)."""
        n, nums = len(episodes), episodes.num_tokens
        net = self._share_rows(n, stage.uniform_share) if stage.uniform_share else None
        cls = self._share_rows(n, self.config.classifier_share)
        cls = cls if net is None else cls & net
        cls_rows = _replay_order(cls, nums).split([len(g) for g in groups])
        return list(cls_rows), None if net is None else _replay_order(net, nums)

    def _signal(self, cat: dict[str, Tensor], episodes: EpisodeBatch) -> Tensor:
        """What the running buffer normalises into advantages. A group's rows share P, so the
        split by P keeps each group consecutive and aligned to multiples of group_size."""
        cfg = self.config
        if cfg.credit == "area":
            signal = area_returns(cat["rewards"], cat["valid"])
        elif cfg.gamma:
            signal = discounted_returns(cat["rewards"], cfg.gamma)
        else:
            signal = cat["rewards"]
        if cfg.group_size > 1 and bool(episodes.lengths.any()):  # stage 0 merges nothing
            self._check_groups(episodes)
            signal = leave_one_out(signal, cat["valid"], cfg.group_size)
        return signal

    def _shared_signal(
        self, signal: Tensor, cat: dict[str, Tensor], episodes: EpisodeBatch
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(signal, valid) of every rank's rows in the order one process would hold them
        (by P, then by global row), and where this rank's rows sit in it (None: one rank).
        The running baseline sees exactly what it would see in one process."""
        if not self.ranks.distributed:
            return signal, cat["valid"], None
        n, nums = len(episodes), episodes.num_tokens
        rows = torch.cat([(nums == p).nonzero().squeeze(1) for p in torch.unique(nums).tolist()])
        keys = cat["num_tokens"] * (n * self.ranks.world) + self.ranks.rank * n + rows
        # One gather of keys, signal and validity side by side, in float64: keys stay exact
        # (below 2^53) and the float32 signal round-trips unchanged.
        f64 = torch.float64
        packed = torch.cat([keys[:, None].to(f64), signal.to(f64), cat["valid"].to(f64)], 1)
        rows_all = self.ranks.gather_rows(packed)
        all_keys, d = rows_all[:, 0].long(), signal.shape[1]
        order = torch.argsort(all_keys)
        where = torch.searchsorted(all_keys[order], keys)
        shared = rows_all[order, 1 : 1 + d].to(signal.dtype)
        valid = rows_all[order, 1 + d :] > 0.5
        return shared, valid, where

    def _htm_losses(
        self, cat: dict[str, Tensor], stage: Stage, s: int, rows: Tensor | None
    ) -> dict[str, Tensor]:
        """The HTM loss over the episodes ``rows`` (bool, grouped order; None: all), the
        classifier's, and what to log of them."""
        cfg = self.config
        keys = ("recon", "step", "transport", "lifter", "encoder", "forest", "num_tokens")
        # indexing by a mask reads it on the host (and again in the backward)
        terms = {k: cat[k] if rows is None else cat[k][rows] for k in keys}
        weights = losses.Weights(
            stage.lambda_step,
            stage.lambda_transport,
            stage.lambda_lifter,
            stage.lambda_encoder,
            self.schedule.depth(self.step, s - 1),
            cfg.loss_power,
            stage.lambda_recon,
            stage.lambda_forest,
            cfg.pooled_recon,
        )
        logits, labels = cat["cls_logits"], cat["cls_labels"]
        # A rank may hold none of the classifier's rows; its share of the mean is then 0.
        ce = F.cross_entropy(logits, labels) if len(labels) else logits.sum() * 0
        cls_loss = self.ranks.global_mean(ce, len(labels))
        return {
            "loss/htm": losses.htm_loss(terms, terms["num_tokens"], weights),
            "loss/recon": terms["recon"].mean(),
            "loss/step": terms["step"].mean(),
            "loss/transport": terms["transport"].mean(),
            "loss/lifter_l2": terms["lifter"].mean(),
            "loss/encoder_l2": terms["encoder"].mean(),
            "loss/forest": terms["forest"].mean(),
            "loss/classifier": cls_loss,
            "classifier/train_accuracy": (logits.argmax(-1) == labels).float().mean()
            if len(labels)
            else torch.tensor(float("nan")),
            "recon/mse_px": terms["recon"].mean() * self.model.token_scale**2,
        }

    def _policy_loss(
        self,
        cat: dict[str, Tensor],
        shared: tuple[Tensor, Tensor, Tensor | None],
        target: float,
        metrics: dict[str, Tensor],
    ) -> tuple[Tensor | None, Tensor | None]:
        """(mean normalised entropy, the policy's loss), None where no merge was made; the
        heuristic's loss trains its temperature only."""
        cfg = self.config
        valid, logp, ent = cat["valid"], cat["logp"], cat["entropy"]  # (N, S-1) each
        if not valid.any():  # the same on every rank: a curriculum stage without merges
            return None, None
        rows = valid.any(1)  # episodes with a merge; weights, not a mask index (a host read)
        count = rows.sum()
        per_episode = losses.masked_mean(ent, valid)

        def mean(x: Tensor) -> Tensor:
            return self.ranks.global_mean((x * rows).sum() / count.clamp(min=1), count)

        entropy = mean(per_episode)
        if cfg.entropy_loss == "episode":
            off_target = mean((per_episode - target).abs())
        else:
            off_target = (entropy - target).abs()
        metrics["policy/entropy"] = entropy
        metrics["policy/entropy_target"] = torch.tensor(target)
        if cfg.policy == "heuristic":  # only log T has a gradient here
            return entropy, off_target
        if cfg.policy != "learned":
            return entropy, None
        l2 = sum(p.pow(2).sum() for p in self.policy_parameters())
        if cfg.imitation:
            nll = -self.ranks.global_mean((logp * valid).sum(1).mean(), len(valid))
            metrics["loss/imitation"] = nll
            metrics["policy/imitation_log_prob"] = -nll / valid.sum(1).float().mean()
            return entropy, nll + cfg.policy_l2 * l2
        signal, all_valid, where = shared
        adv = self.baseline.advantages(signal, all_valid)
        adv = adv if where is None else adv[where]
        pg = -(logp * adv.detach() * valid).sum(1).mean()
        policy = pg + cfg.lambda_entropy * off_target + cfg.policy_l2 * l2
        metrics["loss/policy"] = policy
        metrics["loss/reinforce"] = pg
        return entropy, policy

    def _step(self, total: Tensor, metrics: dict[str, Tensor], stage: Stage) -> bool:
        """Backward, clip per optimiser group (logging each group's norm before the clip),
        step; False (nothing stepped) on a non-finite gradient. A stage that does not train
        the encoder (lifter, merger) or the decoder (unlifter, unmerger) leaves their weights
        as they are (Adam skips parameters without a gradient)."""
        cfg = self.config
        for opt in (self.htm_opt, self.cls_opt, self.policy_opt, self.temp_opt):
            opt.zero_grad(set_to_none=True)
        if total.requires_grad:  # not if every network this stage touches is frozen
            total.backward()
        params = [p for group in self._groups() for p in group] + [self.log_temperature]
        self.ranks.average_gradients(params)
        # an all-reduce hands every rank zeros for them, and Adam would step on zeros
        for p in (p for module in self._frozen_modules(stage) for p in module.parameters()):
            p.grad = None
        clip = cfg.grad_clip or float("inf")  # inf: the norms are still checked for NaN
        norms = [nn.utils.clip_grad_norm_(g, clip) for g in self._groups()]
        metrics.update(zip(("grad/htm", "grad/classifier", "grad/policy"), norms, strict=True))
        if not bool(torch.isfinite(torch.stack(norms)).all()):
            return False
        self.htm_opt.step()
        self.cls_opt.step()
        if cfg.policy == "learned" and self.policy_lr > 0:
            self.policy_opt.step()
        return True

    def _frozen_modules(self, stage: Stage) -> list[nn.Module]:
        """The networks whose weights ``stage`` does not train."""
        m = self.model
        encoder = [] if stage.train_encoder else [m.lifter, m.merger]
        return encoder + ([] if stage.train_decoder else [m.unlifter, m.unmerger])

    def _check_groups(self, episodes: EpisodeBatch) -> None:
        k, n = self.config.group_size, len(episodes)
        tokens = episodes.tokens.view(n // k, k, *episodes.tokens.shape[1:]) if n % k == 0 else None
        if tokens is None or not bool((tokens == tokens[:, :1]).all()):
            raise ValueError(
                f"group_size={k} needs episodes in groups of {k} consecutive rows sharing a "
                "token set (EpisodeCollector.collect_group_round)"
            )

    def _replay(
        self,
        g: EpisodeBatch,
        tau: float,
        s: int,
        cls_rows: Tensor | None = None,
        forest: bool = False,
    ) -> dict[str, Tensor]:
        """Replay one group of episodes with gradients. Per-instance HTM terms, classifier
        logits/labels per node (of the rows where ``cls_rows`` holds; None: all), and per-step
        log pi, entropy, validity and rewards padded to ``s - 1`` steps. With ``forest``, also
        the mean skip-path loss of the forests between the leaves and the last merge (0 where
        there are none)."""
        kind = self.config.policy

        def head(nodes: Tensor, active: Tensor, pair: Tensor, k: int) -> tuple[Tensor, Tensor]:
            # Score only the active slots: the softmax over legal pairs is unchanged, and the
            # table shrinks from S^2 to (P - t)^2 as merges proceed (3x less over an episode).
            order, rank = core.active_first(active, k)  # k >= 2: t < P - 1
            nodes = nodes.gather(1, order[..., None].expand(-1, -1, nodes.shape[-1]))
            active = active.gather(1, order)
            # rows past their end merge nothing and are ignored
            action = core.flat_actions(rank.gather(1, pair), k).clamp(min=0)
            legal = core.legal_pairs(active).flatten(1)
            logits = self.pair_logits(nodes, active)
            if kind != "learned":  # heuristic scores must not train the merger
                logits = logits.detach()
            logp = losses.masked_log_probs(logits, legal, self.temperature())
            return logp.gather(1, action[:, None]).squeeze(1), losses.normalized_entropy(
                logp, legal
            )

        # Every row has P tokens and a merge makes one node of two, so before merge t the
        # most active slots are P - min(t, shortest episode): known without reading the
        # device at every merge.
        p = g.tokens.shape[1]
        longest, shortest = torch.stack([g.lengths.max(), g.lengths.min()]).tolist()
        rep = core.replay(
            self.model, g.tokens, g.num_tokens, g.noise, g.pairs, g.lengths, steps=longest
        )
        logps, ents, forests = [], [], []
        for t, before in enumerate(rep.before):
            if forest and t > 0:  # the forest after t merges, one more still to come
                forests.append(core.forest_loss(self.model, before) * (g.lengths > t))
            inputs = (
                core.nodes(before).detach(),
                before.active,
                g.pairs[:, t].clamp(min=0),
                p - min(t, shortest),
            )
            if self.config.checkpoint_policy:
                logp, ent = checkpoint(head, *inputs, use_reentrant=False)
            else:
                logp, ent = head(*inputs)
            logps.append(logp)
            ents.append(ent)
        state, step_losses = rep.state, rep.step_losses
        out = losses.htm_terms(self.model, state, step_losses, tau)
        count = (g.lengths - 1).clamp(min=1).to(step_losses.dtype)
        out["forest"] = (
            torch.stack(forests, 1).sum(1) / count if forests else step_losses.new_zeros(len(g))
        )
        out["cls_logits"], out["cls_labels"] = core.classifier_inputs(
            self.model, state, out.pop("down"), cls_rows
        )
        n, d = len(g), g.pairs.shape[1]
        steps = torch.arange(s - 1, device=self.device)[None, :]
        pad = (0, s - 1 - len(logps))
        out["logp"] = F.pad(torch.stack(logps, 1), pad) if logps else g.rewards.new_zeros(n, s - 1)
        out["entropy"] = F.pad(torch.stack(ents, 1), pad) if ents else g.rewards.new_zeros(n, s - 1)
        out["valid"] = steps < g.lengths[:, None]
        out["rewards"] = F.pad(g.rewards, (0, s - 1 - d))
        out["num_tokens"] = g.num_tokens
        return out

    def _groups(self) -> list[list[Tensor]]:
        return [
            [p for group in opt.param_groups for p in group["params"]]
            for opt in (self.htm_opt, self.cls_opt, self.policy_opt)
        ]

    def _skip(self, metrics: dict[str, Tensor]) -> dict[str, float]:
        """A non-finite loss or gradient: drop this update (the caller counts these)."""
        for opt in (self.htm_opt, self.cls_opt, self.policy_opt):
            opt.zero_grad(set_to_none=True)
        out = {k: float(v.detach()) for k, v in metrics.items()}
        out["train/skipped"] = 1.0
        return out

    def _tune_temperature(self, measured: Tensor, target: float) -> Tensor:
        """Heuristic policy: Adam on log T toward the target entropy, with the report's two
        fixes (3.4.3): reset Adam's memory while the entropy is pinned at 1 above a lower
        target (else it stays stuck there), and pause below ``entropy_floor``."""
        if measured > 0.999 and target < 0.999:
            self.temp_opt.state.clear()
        if not (measured < self.config.entropy_floor and target < measured):
            self.temp_opt.step()
        return self.log_temperature.detach().exp()

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": asdict(self.config),
            "htm_opt": self.htm_opt.state_dict(),
            "cls_opt": self.cls_opt.state_dict(),
            "policy_opt": self.policy_opt.state_dict(),
            "temp_opt": self.temp_opt.state_dict(),
            "log_temperature": self.log_temperature.detach().clone(),
            "baseline": None if self.baseline is None else self.baseline.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.htm_opt.load_state_dict(state["htm_opt"])
        self.cls_opt.load_state_dict(state["cls_opt"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.temp_opt.load_state_dict(state["temp_opt"])
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        if state["baseline"] is not None:
            depths, size = state["baseline"]["values"].shape
            self.baseline = RunningBaseline(depths, size, self.config.baseline)
            self.baseline.to(self.device)
            self.baseline.load_state_dict(state["baseline"])
        self.generator.set_state(state["generator"].cpu())
        if isinstance(self.actor, IncrementalActor):
            self.actor.forget()


def _to_floats(metrics: dict[str, Tensor], device: torch.device) -> dict[str, float]:
    """The metrics as Python floats, read from the device at once (each read waits)."""
    values = [v.detach().to(device, torch.float64).reshape(()) for v in metrics.values()]
    return dict(zip(metrics, torch.stack(values).tolist(), strict=True))


def _replay_order(rows: Tensor, nums: Tensor) -> Tensor:
    """Per-row values (N, ...) in the order ``update`` replays the rows: grouped by token
    count P (``EpisodeBatch.split_by_tokens``), row order kept within a group."""
    return rows[torch.argsort(nums, stable=True)]


@contextmanager
def _without_grad(modules: list[nn.Module]):
    """The modules' parameters require no gradient inside the block (restored after)."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
