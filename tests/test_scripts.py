"""Tiny-budget runs of every script, resume equality, and their error handling."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script

from htm_gym.nets import HTMConfig, make_model

reinforce = load_script("reinforce")
evaluate = load_script("evaluate")
generate = load_script("generate")


def _args(tmp_path, **kw):
    base = dict(
        num_envs=8,
        stage_steps=(1, 1, 1, 1, 1, 3),
        hidden_dim=16,
        policy_hidden_dim=8,
        eval_every=4,
        eval_instances=16,
        image_every=8,
        checkpoint_every=4,
        runs_dir=str(tmp_path),
        progress=False,
    )
    return reinforce.Args(**{**base, **kw})


def test_reinforce_smoke_and_evaluate(tmp_path):
    run = reinforce.main(_args(tmp_path, run_name="smoke"))
    assert (run / "checkpoint.pt").is_file() and (run / "args.json").is_file()
    assert any(run.glob("events.out.tfevents.*"))
    with pytest.raises(SystemExit, match="already exists"):
        reinforce.main(_args(tmp_path, run_name="smoke"))  # never overwrite a run
    res = evaluate.main(evaluate.Args(checkpoint=str(run), num_instances=12, batch_size=8))
    assert 0 <= res["greedy"]["recovered"] <= 1 and res["sampled"]["recon_mse"] >= 0
    first = sorted(run.glob("eval_*.json"))
    evaluate.main(evaluate.Args(checkpoint=str(run), num_instances=12, batch_size=8))
    four = evaluate.main(  # more tokens than the run trained on: the env takes P = 8
        evaluate.Args(
            checkpoint=str(run), num_instances=4, dataset_kwargs='{"num_crosses": [4, 4]}'
        )
    )
    assert list(four["greedy"]["per_p"]) == [8]
    for bad in ('{"num_crosses": [0, 1]}', "[1]", "{oops"):
        with pytest.raises(SystemExit, match="--dataset-kwargs"):
            evaluate.main(evaluate.Args(checkpoint=str(run), dataset_kwargs=bad))
    assert len(sorted(run.glob("eval_generated_12*.json"))) == 2, "earlier results kept"
    assert json.loads(first[0].read_text())["env_id"] == "HTM-Crosses-v0"
    stored = json.loads((run / "args.json").read_text())
    assert (stored["reward"], stored["gamma"]) == ("one_step", 1.0)  # crosses' credit
    assert res["greedy"]["recon_mse_pooled"] >= 0


def test_generate_and_report_smoke(tmp_path):
    run = reinforce.main(_args(tmp_path, run_name="gen", eval_every=0, image_every=0))
    small = dict(checkpoint=str(run), num_roots=200, max_components=3, num_train_reference=50)
    first = generate.main(generate.Args(num_samples=30, **small))
    assert (run / "root_sampler.pt").is_file()
    assert 0 <= first["validity"] <= 1 and first["num_samples"] == 30
    again = generate.main(generate.Args(num_samples=30, **small))
    assert again["validity"] == first["validity"], "same seed, same sampler: same samples"
    assert len(list((run / "samples").glob("*.npz"))) == 2, "earlier samples kept"
    generate.main(generate.Args(num_samples=5, refit=True, **small))
    assert (run / "root_sampler.1.pt").is_file(), "a refit never replaces the saved sampler"
    with pytest.raises(SystemExit, match="num-samples"):
        generate.main(generate.Args(num_samples=0, **small))
    kde = generate.main(generate.Args(num_samples=20, sampler_kind="kde", **small))
    assert kde["sampler_kind"] == "kde" and (run / "root_sampler_kde.pt").is_file()
    generate.main(generate.Args(num_samples=5, sampler_kind="kde", bandwidth=0.0, **small))
    assert (run / "root_sampler_kde.1.pt").is_file(), "a kernel density never replaces one"
    with pytest.raises(SystemExit, match="bandwidth"):
        generate.main(generate.Args(num_samples=5, sampler_kind="kde", bandwidth=-1.0, **small))
    with pytest.raises(SystemExit, match="neighbours"):
        generate.main(generate.Args(num_samples=5, sampler_kind="parts", neighbours=-1, **small))
    parts = generate.main(
        generate.Args(num_samples=20, sampler_kind="parts", neighbours=3, **small)
    )
    assert parts["sampler_kind"] == "parts" and (run / "root_sampler_parts.pt").is_file()
    again = generate.main(
        generate.Args(num_samples=20, sampler=str(run / "root_sampler_parts.pt"), **small)
    )
    assert again["validity"] == parts["validity"], "a saved parts sampler reproduces samples"

    res = evaluate.main(
        evaluate.Args(
            checkpoint=str(run),
            num_instances=12,
            batch_size=8,
            report=True,
            report_samples=20,
            report_instances=16,
            noise_free=False,
        )
    )
    names = {p.name for p in (run / "report").iterdir()}
    for fig in (
        "classifier_curves",
        "reconstruction_violin",
        "policy_diagram",
        "loss_curves",
        "embeddings_pca",
        "gmm_information_criteria",
        "samples",
    ):
        assert f"{fig}.png" in names, fig
    assert {"classifier.json", "generation.json", "report.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert res["report"]["classifier"]["accuracy"] >= 0

    report_args = dict(checkpoint=str(run), num_instances=12, batch_size=8, report=True)
    small_report = dict(report_samples=20, report_instances=16, noise_free=False)
    evaluate.main(
        evaluate.Args(
            **report_args, **small_report, report_sampler=str(run / "root_sampler_parts.pt")
        )
    )
    parts_table = json.loads((run / "report.1" / "generation.json").read_text())
    assert parts_table["sampler_kind"] == "parts", "the report used the given sampler"
    with pytest.raises(SystemExit, match="report-sampler"):
        evaluate.main(evaluate.Args(**report_args, report_sampler=str(run / "missing.pt")))


# the original's learner: its pooled baseline (a window smaller than a run) must resume too
REPORT_LEARNER = dict(baseline="pooled", baseline_size=50, grad_clip=0.0, entropy_loss="episode")


@pytest.mark.parametrize(
    ("policy", "group_size", "extra"),
    [("learned", 1, {}), ("heuristic", 1, {}), ("learned", 4, {}), ("learned", 1, REPORT_LEARNER)],
)
def test_resume_equals_uninterrupted(tmp_path, policy, group_size, extra):
    kw = dict(policy=policy, group_size=group_size, eval_every=0, image_every=0, **extra)
    straight = reinforce.main(_args(tmp_path, run_name="a", **kw))
    part = reinforce.main(_args(tmp_path, run_name="b", max_updates=4, **kw))
    assert torch.load(part / "checkpoint.pt", weights_only=True)["learner"]["step"] == 4
    reinforce.main(reinforce.Args(resume=str(part), progress=False))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["learner"]["step"] == b["learner"]["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_of_a_run_from_before_the_linear_shortcut(tmp_path):
    run = reinforce.main(
        _args(
            tmp_path, linear_skip=False, policy_lr=1e-3, eval_every=0, image_every=0, max_updates=4
        )
    )
    path = run / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    for key in ("linear_skip", "policy_lr", "policy_l2", "group_size", "lr"):  # as older runs
        del ckpt["args"][key]
    del ckpt["config"]["linear_skip"]
    ckpt["args"] |= {"embed_dim": None, "token_scale": None}  # "dataset default", then
    ckpt["config"]["token_scale"] = 64.0
    ckpt["model"]["token_scale"] = torch.tensor(64.0)
    torch.save(ckpt, path)
    reinforce.main(reinforce.Args(resume=str(run), progress=False))
    done = torch.load(path, weights_only=True)
    assert done["update"] == 8 and done["config"]["linear_skip"] is False
    assert done["args"]["policy_lr"] == 1e-3, "the policy's old learning rate, not the new default"
    assert done["args"]["group_size"] == 1
    assert list(done["args"]["lr"]) == [2e-3], "the networks' old learning rate, not crosses' 4e-3"
    assert done["config"]["token_scale"] == done["args"]["token_scale"] == 64.0
    assert done["args"]["embed_dim"] == done["config"]["embed_dim"]
    assert not any(k.endswith("skip.weight") for k in done["model"])


def test_model_arguments_reach_the_checkpoint(tmp_path):
    run = reinforce.main(
        _args(
            tmp_path,
            stage_steps=(1, 1),
            eval_every=0,
            image_every=0,
            token_scale=2.0,
            noise_std=0.02,
            embed_dim=5,
            policy="heuristic",
            lambda_entropy=1.5,
            loss_power=0.3,
            policy_lr=2e-3,
            policy_l2=0.0,
            linear_skip=False,
        )
    )
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    cfg = ckpt["config"]
    assert (cfg["token_scale"], cfg["noise_std"], cfg["embed_dim"]) == (2.0, 0.02, 5)
    assert (cfg["hidden_dim"], cfg["policy_hidden_dim"]) == (16, 8)
    learner = ckpt["learner"]["config"]
    assert (learner["policy"], learner["lambda_entropy"], learner["loss_power"]) == (
        "heuristic",
        1.5,
        0.3,
    )
    assert (learner["policy_lr"], learner["policy_l2"], cfg["linear_skip"]) == (2e-3, 0.0, False)


def test_heuristic_evaluation_is_the_heuristic_runs_own_greedy_policy(tmp_path, monkeypatch):
    """--heuristic on a heuristic-policy run plays exactly its greedy evaluation, also when
    the all-pairs scoring forces smaller batches."""
    run = reinforce.main(
        _args(tmp_path, stage_steps=(1, 2), policy="heuristic", eval_every=0, image_every=0)
    )
    monkeypatch.setattr(evaluate, "heuristic_batch", lambda model, slots, batch: 3)
    res = evaluate.main(
        evaluate.Args(checkpoint=str(run), num_instances=10, batch_size=8, heuristic=True)
    )
    own, extra = res["greedy"], res["heuristic"]
    for key in ("recovered", "bracket_f1", "recon_mse_pooled", "mean_return"):
        assert extra[key] == pytest.approx(own[key], rel=1e-6), key


def test_heuristic_batch_fits_the_pair_table_in_its_budget():
    model = make_model(HTMConfig(token_dim=4, embed_dim=8, hidden_dim=16), 0)
    per_row = 6 * 6 * (4 * 8 + 4 * 16) * 4
    assert evaluate.heuristic_batch(model, 6, 4096, budget=10 * per_row) == 10
    assert evaluate.heuristic_batch(model, 6, 4, budget=10 * per_row) == 4
    assert evaluate.heuristic_batch(model, 600, 4096, budget=10 * per_row) == 1


def test_parts_sampler_needs_a_learned_pair_scorer(tmp_path):
    run = reinforce.main(
        _args(tmp_path, stage_steps=(1, 1), policy="heuristic", eval_every=0, image_every=0)
    )
    with pytest.raises(SystemExit, match="learned pair scorer"):
        generate.main(
            generate.Args(checkpoint=str(run), sampler_kind="parts", num_samples=3, num_roots=20)
        )
    assert not (run / "root_sampler_parts.pt").exists(), "nothing fitted or saved"


def test_per_stage_arguments_reach_the_schedule():
    args = reinforce.Args(stage_steps=(1, 2, 3), lambda_recon=(1.0, 2.0, 3.0), lr=(1e-3,))
    sched = reinforce.build_schedule(args, "crosses", 5)
    assert [st.lambda_recon for st in sched.stages] == [1.0, 2.0, 3.0]
    assert [st.noise_std for st in sched.stages] == [None] * 3
    assert [st.merges for st in sched.stages] == [0, 1, None]
    assert all(st.lr == 1e-3 for st in sched.stages)
    args = reinforce.Args(
        stage_steps=(1, 2), policy_lr_scale=(1.0, 0.0), stage_noise_std=(0.2, 0.01)
    )
    sched = reinforce.build_schedule(args, "crosses", 5)
    assert [(st.policy_lr_scale, st.noise_std) for st in sched.stages] == [(1.0, 0.2), (0.0, 0.01)]
    args = reinforce.Args(
        stage_steps=(1, 2),
        lambda_step=(0.5,),
        lambda_transport=(0.6, 0.7),
        lambda_lifter=(0.1,),
        lambda_encoder=(0.2,),
        lr_end=0.81,
        lr_floor=1e-6,
        working_entropy=0.4,
        tau_start=0.3,
        tau_end=0.6,
        entropy_schedule=(0.1, 0.2, 0.3, 0.4),
    )
    sched = reinforce.build_schedule(args, "crosses", 5)
    assert [st.lambda_transport for st in sched.stages] == [0.6, 0.7]
    st = sched.stages[1]
    assert st.lr_decay == pytest.approx(0.81) and sched.stages[0].lr_decay == pytest.approx(0.81)
    assert (st.lambda_step, st.lambda_lifter, st.lambda_encoder) == (0.5, 0.1, 0.2)
    for dataset, lr in (("crosses", 4e-3), ("trees", 2e-3)):  # the dataset's default lr
        assert reinforce.build_schedule(
            reinforce.Args(stage_steps=(1, 101), lr_end=0.01), dataset, 5
        ).lr(1 + 100) == pytest.approx(lr * 0.01)
    assert (sched.lr_floor, sched.working_entropy, sched.tau_start) == (1e-6, 0.4, 0.3)
    assert sched.tau_end == 0.6 and sched.tau(3) == 0.0  # 3 updates: tau is 0 from 1.8 on
    marks = (sched.explore_end, sched.working_start, sched.exploit_start, sched.exploit_end)
    assert marks == (0.1, 0.2, 0.3, 0.4)
    args = reinforce.Args(  # stages past P - 1 merges also go to the root
        stage_steps=(1,) * 5,
        uniform_share=(0.5, 0.5, 0.5, 0.5, 0.0),
        freeze_encoder_stages=(4,),
        freeze_decoder_stages=(0, 3),
    )
    sched = reinforce.build_schedule(args, "crosses", 2)
    assert [st.merges for st in sched.stages] == [0, 1, None, None, None]
    assert [st.uniform_share for st in sched.stages] == [0.5] * 4 + [0.0]
    assert [st.train_encoder for st in sched.stages] == [True] * 4 + [False]
    assert [st.train_decoder for st in sched.stages] == [False, True, True, False, True]


def test_trees_smoke(tmp_path):
    run = reinforce.main(
        _args(
            tmp_path,
            env_id="HTM-Trees-v0",
            distill=False,  # the distilled default: tests/test_training_cli.py
            stage_steps=(1, 2),
            eval_every=3,
            image_every=3,
            run_name="trees",
        )
    )
    assert (run / "checkpoint.pt").is_file()
    stored = json.loads((run / "args.json").read_text())
    resolved = (stored["reward"], stored["token_scale"], stored["lr"])
    assert resolved == ("skip_path", 8.0, [2e-3])
    res = evaluate.main(
        evaluate.Args(checkpoint=str(run), num_instances=6, batch_size=4, proximity=True)
    )
    assert res["proximity"]["recovered"] == 1.0  # narrow subtrees are each other's nearest


def test_script_errors(tmp_path):
    with pytest.raises(SystemExit, match="env-id"):
        reinforce.main(_args(tmp_path, env_id="CartPole-v1"))
    with pytest.raises(SystemExit, match="lr"):
        reinforce.main(_args(tmp_path, lr=(1e-3, 1e-3)))
    with pytest.raises(SystemExit, match="policy_lr"):
        reinforce.main(_args(tmp_path, policy_lr=0.0))
    with pytest.raises(SystemExit, match="group-size"):
        reinforce.main(_args(tmp_path, group_size=3))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(SystemExit, match="not a readable"):
        reinforce.main(reinforce.Args(resume=str(bad)))
    with pytest.raises(FileNotFoundError):
        evaluate.main(evaluate.Args(checkpoint=str(tmp_path / "missing")))


def test_bench_runs():
    bench = load_script("bench_env")

    args = bench.Args(num_envs=4, steps=3, sync_steps=2, datasets=("trees",), padding_batch=64)
    rows = bench.main(args)
    assert rows[0]["native"] > 0 and rows[0]["sync"] > 0
    args = bench.Args(num_envs=3, datasets=(), padding_batch=0, uniform_p=(5,), episodes=1)
    (row,) = bench.main(args)
    assert row["dataset"] == "uniform5" and row["native"] > row["with_resets"] > 0


def test_repeated_non_finite_updates_stop_the_run(tmp_path, monkeypatch):
    from agents.reinforce import ReinforceLearner

    seeds = []

    def failing(self, episodes):
        seeds.append(float(episodes.tokens.sum()))
        return {"train/skipped": 1.0, "recon/mse_px": float("nan")}

    monkeypatch.setattr(ReinforceLearner, "update", failing)
    with pytest.raises(SystemExit, match="3 consecutive non-finite"):
        reinforce.main(
            _args(
                tmp_path, max_skips=3, eval_every=0, image_every=0, stage_steps=(1, 1, 1, 1, 1, 3)
            )
        )
    assert len(seeds) == 3 and len(set(seeds)) == 3, "each retry draws fresh episodes"


def test_draw_trees_smoke(tmp_path):
    draw = load_script("draw_trees")
    run = reinforce.main(_args(tmp_path, run_name="draw", eval_every=0, image_every=0))
    out = tmp_path / "trees.png"
    assert draw.main(draw.Args(checkpoint=str(run), output=str(out), num=2)) == out
    again = draw.main(draw.Args(checkpoint=str(run), output=str(out), num=2))
    assert again != out and out.is_file(), "an existing picture is never overwritten"
    with pytest.raises(SystemExit, match="--num"):
        draw.main(draw.Args(checkpoint=str(run), num=0))
