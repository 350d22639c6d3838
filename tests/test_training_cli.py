"""train/reinforce.py: interrupts save the run, bad input is refused before any side effect
(issue 17)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, load_script

import htm_gym.datasets
from agents.distributed import Ranks

reinforce = load_script("reinforce")

TREES = "HTM-Trees-v0"
SMALL = dict(num_envs=8, hidden_dim=16, policy_hidden_dim=8, eval_every=0, image_every=0)


def _args(tmp_path, **kw):
    base = dict(SMALL, stage_steps=(1, 1, 1, 1, 1, 3), runs_dir=str(tmp_path), progress=False)
    return reinforce.Args(**{**base, **kw})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_envs": 0}, "--num-envs 0"),
        ({"checkpoint_every": 0}, "--checkpoint-every 0"),
        ({"max_updates": -3}, "--max-updates -3"),
        ({"eval_instances": 0, "eval_every": 5}, "--eval-instances 0"),
        ({"run_name": "../.."}, "plain folder name"),
        ({"run_name": "/tmp/abs"}, "plain folder name"),
        ({"env_id": "HTM-Nope-v0"}, "unknown env id"),
        ({"group_size": 3}, "divisor"),
        ({"device": "gpu"}, "--device 'gpu'"),
        ({"node_widths": (2, 99)}, "--node-widths must lie in 1..embed-dim"),
        ({"node_bound": -1.0}, "--node-bound must be >= 0"),
        ({"reward_rate": 0.1}, "add --reward skip_path"),
        ({"reward_rate": -1.0, "reward": "skip_path"}, "--reward-rate must be >= 0"),
        ({"reward_rate": float("inf"), "reward": "skip_path"}, "--reward-rate must be >= 0"),
        ({"grad_clip": -1.0}, "--grad-clip must be >= 0"),
        ({"classifier_share": 0.0}, "--classifier-share must be in"),
        ({"classifier_share": 1.5}, "--classifier-share must be in"),
        ({"baseline_size": 1}, "--baseline-size must be >= 2"),
        ({"credit": "area", "gamma": 0.0}, "--credit area takes no discount"),
        ({"uniform_share": (1.5,)}, "--uniform-share takes shares in"),
        ({"uniform_share": (0.5,), "group_size": 2}, "--uniform-share needs --group-size 1"),
        ({"freeze_encoder_stages": (6,)}, "--freeze-encoder-stages takes stage indices 0..5"),
        ({"freeze_decoder_stages": (-1,)}, "--freeze-decoder-stages takes stage indices"),
        ({"tau_end": 0.0}, "tau_end must be in"),
        ({"own_share": 0.5}, "--own-share must be in \\[0, 1\\) and needs --teacher"),
        ({"env_id": TREES, "teacher_stage_steps": (1, 2)}, "recipe has 8 stages"),
        ({"teacher_stage_steps": (1,)}, "--teacher-stage-steps sets the curriculum of --distill"),
        ({"env_id": TREES, "policy": "random", "teacher_stage_steps": (1,)}, "another option"),
    ],
)
def test_bad_arguments_are_refused_before_a_run_folder_exists(tmp_path, change, message):
    with pytest.raises(SystemExit, match=message):
        reinforce.main(_args(tmp_path / "runs", **change))
    assert not (tmp_path / "runs").exists()


def test_a_new_run_folder_is_resumable_at_once(tmp_path):
    run = reinforce.main(_args(tmp_path, run_name="r", max_updates=1))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["update"] == 1
    again = reinforce.main(reinforce.Args(resume=str(run), max_updates=2, progress=False))
    assert torch.load(again / "checkpoint.pt", weights_only=False)["update"] == 3


def test_resume_refuses_other_flags_and_a_foreign_args_file(tmp_path):
    run = reinforce.main(_args(tmp_path, run_name="r", max_updates=1))
    with pytest.raises(SystemExit, match="drop --env-id --lr"):
        reinforce.main(
            reinforce.Args(resume=str(run), env_id="HTM-Trees-v0", lr=(1.0,), progress=False)
        )
    args = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**args, "env_id": "HTM-Trees-v0"}))
    with pytest.raises(SystemExit, match=r"disagree on \['env_id'\]"):
        reinforce.main(reinforce.Args(resume=str(run), progress=False))
    with pytest.raises(SystemExit, match="--resume"):
        reinforce.main(reinforce.Args(resume=str(tmp_path / "missing"), progress=False))


def test_sigint_saves_the_run_and_says_how_to_resume(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "train" / "reinforce.py"), "--stage-steps", "50", "50", "50",
        "50", "100", "400", "--num-envs", "8", "--hidden-dim", "16", "--eval-every", "0",
        "--image-every", "0", "--threads", "1", "--runs-dir", str(tmp_path), "--run-name", "s",
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = tmp_path / "s" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:  # written at update 0
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert f"--resume {tmp_path / 's'}" in out
    saved = torch.load(ckpt, weights_only=False)["update"]
    assert 0 < saved < 700
    assert not list((tmp_path / "s").glob("*.tmp"))
    run = reinforce.main(reinforce.Args(resume=str(tmp_path / "s"), max_updates=1, progress=False))
    assert torch.load(run / "checkpoint.pt", weights_only=False)["update"] == saved + 1


def test_a_run_resumes_with_the_curriculum_it_ran(tmp_path):
    """Runs store their resolved stage steps; older runs stored () ("dataset default") and
    resume with the curriculum in their checkpoint, not with today's default."""
    run = reinforce.main(_args(tmp_path, run_name="r", max_updates=2))
    assert json.loads((run / "args.json").read_text())["stage_steps"] == [1, 1, 1, 1, 1, 3]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    ckpt["args"]["stage_steps"] = ()
    torch.save(ckpt, run / "checkpoint.pt")
    args = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({**args, "stage_steps": []}))
    again = reinforce.main(reinforce.Args(resume=str(run), progress=False))
    done = torch.load(again / "checkpoint.pt", weights_only=False)
    assert done["update"] == 8 and tuple(done["args"]["stage_steps"]) == (1, 1, 1, 1, 1, 3)


def test_init_seed_sets_the_initial_weights_alone(tmp_path):
    gen = htm_gym.datasets.make_generator("crosses")
    cpu = torch.device("cpu")

    def built(**kw):
        args = reinforce.resolve_defaults(_args(tmp_path, **kw), gen)
        _, model, learner = reinforce.build(args, gen, cpu, Ranks())
        return model.state_dict(), learner.generator.get_state()

    weights_5, _ = built(seed=5)
    weights_1, draws_1 = built(seed=1)
    weights, draws = built(seed=1, init_seed=5)
    assert all(torch.equal(weights[k], weights_5[k]) for k in weights)
    assert not torch.equal(weights["lifter.weight"], weights_1["lifter.weight"])
    assert torch.equal(draws, draws_1)  # the learner's sampling still follows --seed


def test_a_teacher_run_chooses_the_students_merges_and_bad_teachers_are_refused(tmp_path):
    trees = dict(env_id=TREES, stage_steps=(1, 1, 1, 1, 1, 1, 2))
    teacher = reinforce.main(
        _args(tmp_path, run_name="teacher", embed_dim=7, distill=False, **trees)
    )
    student = reinforce.main(
        _args(tmp_path, run_name="student", teacher=str(teacher), own_share=0.25, **trees)
    )
    ckpt = torch.load(student / "checkpoint.pt", weights_only=False)
    assert ckpt["update"] == 8 and ckpt["learner"]["config"]["imitation"]
    assert ckpt["learner"]["config"]["own_share"] == 0.25
    bad = {
        "crosses": ({"teacher": str(teacher)}, "a teacher must share the student's --env-id"),
        "missing": ({"teacher": str(tmp_path / "nope"), **trees}, "--teacher: checkpoint not"),
        "policy": ({"teacher": str(teacher), "policy": "random", **trees}, "drop --policy"),
    }
    for change, message in bad.values():
        with pytest.raises(SystemExit, match=message):
            reinforce.main(_args(tmp_path / "runs", **change))
    assert not (tmp_path / "runs").exists()


def _weights(run):
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_distill_trains_the_recipes_teacher_first_and_resumes_in_either_phase(tmp_path, capsys):
    """The trees default trains the dataset's teacher in <run>/teacher, then the student by
    imitation; --max-updates counts both phases, and a run stopped in either resumes to the
    same weights as one run straight through."""
    trees = dict(env_id=TREES, stage_steps=(1, 1, 1, 1, 1, 1, 2), teacher_stage_steps=(1,) * 8)
    whole = reinforce.main(_args(tmp_path, run_name="whole", **trees))
    part = reinforce.main(_args(tmp_path, run_name="part", max_updates=3, **trees))
    assert "teacher unfinished; continue: python train/reinforce.py --resume" in (
        capsys.readouterr().out
    )
    for budget, student_at in ((7, 2), (0, 8)):  # the teacher's last 5 updates + 2, then all
        reinforce.main(reinforce.Args(resume=str(part), max_updates=budget, progress=False))
        assert torch.load(part / "checkpoint.pt", weights_only=False)["update"] == student_at
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    assert (ckpt["args"]["distill"], ckpt["args"]["own_share"], ckpt["args"]["reward"]) == (
        True, 0.25, "one_step"
    )  # fmt: skip
    assert ckpt["learner"]["config"]["imitation"]
    teacher = torch.load(part / "teacher" / "checkpoint.pt", weights_only=False)
    assert teacher["update"] == 8 and teacher["config"]["embed_dim"] == 7
    for a, b in ((whole, part), (whole / "teacher", part / "teacher")):
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_distill_is_the_trees_default_unless_another_option_chooses_the_merges():
    trees = htm_gym.datasets.make_generator("trees")

    def resolved(**kw):
        return reinforce.resolve_defaults(reinforce.Args(env_id=TREES, **kw), trees)

    taught = resolved()
    assert taught.distill and (taught.own_share, taught.reward) == (0.25, "one_step")
    assert taught.tau_start == 0.0 == resolved(teacher="runs/t").tau_start
    assert resolved(tau_start=0.3).tau_start == 0.3
    assert resolved(teacher="runs/t").own_share == 0.25 and not resolved(teacher="runs/t").distill
    for kw in ({"policy": "random"}, {"distill": False}, {"uniform_share": (1.0,)}):
        assert not resolved(**kw).distill
    plain = resolved(distill=False)
    assert (plain.reward, plain.own_share, sum(plain.stage_steps)) == ("skip_path", 0.0, 7600)
    assert plain.tau_start == 0.5
    crosses = htm_gym.datasets.make_generator("crosses")
    assert not reinforce.resolve_defaults(reinforce.Args(), crosses).distill
    assert reinforce.resolve_defaults(reinforce.Args(), crosses).tau_start == 0.5
