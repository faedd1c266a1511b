"""Checkpoint and resume: a run killed at any point continues to the model it would have had.

The adversary here is the machine: SIGKILL at a random moment (between rounds, inside one,
while the checkpoint is being written), SIGTERM, and a checkpoint or run directory damaged
afterwards. A resumed run must end bit for bit where an uninterrupted one does (DP noise
seeded, ``privacy.seeded-noise``), or, with noise from the OS CSPRNG, with the same ledger:
one event per mechanism run, none lost and none counted twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedcore import checkpoint
from fedcore.checkpoint import Checkpoint, CheckpointError
from fedcore.cli import main, scenario_path
from fedcore.config import load_scenario, parse_config
from simulations.engines import run_engine
from simulations.rundir import RunDirectory, node_state_needed
from simulations.runner import resume, simulate

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "seed": 3,
    "data": {"dataset": "digits", "num-clients": 6},
    "model": {"hidden": [16]},
    "train": {"rounds": 5, "local-epochs": 1, "fraction": 0.5},
    "evaluate": {"fraction": 0.0},
}

# name -> overrides: each keeps a different kind of state across rounds
SETTINGS = {
    # the server optimizer's moments and the server's ledger, every update through secure
    # aggregation
    "fedadam-dp-secagg": [
        "strategy.name=fedadam",
        "strategy.server-lr=0.05",
        "privacy.dp=client",
        "privacy.clipping=client",
        "privacy.noise-multiplier=0.5",
        "privacy.clip-norm=1.0",
        "privacy.seeded-noise=true",
        "secagg.mode=full",
        "secagg.clear-metrics=false",
    ],
    # the adaptive clip norm, moved by each round's noised count
    "adaptive-clipping": [
        "privacy.dp=client",
        "privacy.noise-multiplier=0.5",
        "privacy.clip-norm=0.1",
        "privacy.adaptive=true",
        "privacy.count-stddev=1.0",
        "privacy.seeded-noise=true",
    ],
}


# local DP: each node's own ledger in its Context.state, on two worker processes
LOCAL_DP = [
    "strategy.name=fedavgm",
    "strategy.server-momentum=0.9",
    "privacy.dp=local",
    "privacy.noise-multiplier=1.0",
    "privacy.clip-norm=1.0",
    "privacy.seeded-noise=true",
]


def _cfg(overrides: list[str]):
    from fedcore.config import parse_override

    return parse_config(BASE, dict(parse_override(o) for o in overrides))


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt")


def _kill_during(out: Path, overrides: list[str], after_rounds: int, delay: float) -> None:
    """Run the CLI in a child process and SIGKILL it ``delay`` s after ``after_rounds``
    rounds are in its metrics (so it dies anywhere: between rounds, mid-round, mid-write)."""
    scenario = out.parent / "scenario.toml"
    from fedcore.config import to_toml

    scenario.write_text(to_toml(_cfg(overrides)))
    child = subprocess.Popen(
        [sys.executable, "-m", "fedcore", "simulate", str(scenario), "--out", str(out), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= after_rounds:
            break
        if child.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {child.stderr.read().decode()}")
        time.sleep(0.01)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_run_killed_at_a_random_moment_resumes_to_the_same_model(tmp_path, name):
    overrides = SETTINGS[name]
    rng = random.Random(name)
    after, delay = rng.randint(1, 3), rng.uniform(0.0, 0.3)
    reference = simulate(_cfg(overrides), out=tmp_path / "whole", progress=False)

    killed = tmp_path / "killed"
    _kill_during(killed, overrides, after, delay)
    assert (killed / "checkpoint.bin").exists()
    assert not (killed / "summary.json").exists()
    result = resume(killed, progress=False)

    assert result.summary["status"] == "completed"
    assert result.summary["rounds"] == reference.summary["rounds"] == 5
    a, b = _state(killed), _state(reference.path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # every round's record once, in order; the ledger equal to the uninterrupted run's
    rounds = [
        json.loads(x)["round"] for x in (killed / "metrics.jsonl").read_text().split("\n")[:-1]
    ]
    assert rounds == [1, 2, 3, 4, 5]
    assert (killed / "ledger.jsonl").read_text() == (reference.path / "ledger.jsonl").read_text()
    assert not (killed / "checkpoint.bin").exists()  # a completed run has nothing to resume


def _events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]


def test_with_noise_from_the_os_a_rerun_round_is_charged_twice(tmp_path):
    """Unseeded DP noise: round 3's release reached the server before the interrupt, and the
    resumed run releases round 3 again with fresh noise. Both were seen, so the ledger keeps
    both (one event per mechanism run, none lost), the report counts both, and the server's
    budget check, resumed from its checkpoint, charges the first too."""
    from privacy.report import write_report

    overrides = [o for o in SETTINGS["fedadam-dp-secagg"] if "seeded-noise" not in o]
    reference = simulate(_cfg(overrides), out=tmp_path / "whole", progress=False)
    run = _interrupted(tmp_path, overrides=overrides)  # round 3 recorded, checkpoint at 2
    run_dir, ckpt = RunDirectory.reopen(run)
    run_dir.unlock()
    assert json.loads(_ledger_line(ckpt.strategy["ledger"], -1)) == _events(run)[2]
    resume(run, progress=False)
    events = _events(run)
    assert [(e["round"], e.get("rerun", False)) for e in events] == [
        (1, False),
        (2, False),
        (3, True),
        (3, False),
        (4, False),
        (5, False),
    ]
    report, whole = write_report(run), write_report(reference.path)
    assert report["events"] == 6 and report["rerun_events"] == 1
    eps = report["guarantee"]["max_client_epsilon"]
    assert eps > whole["guarantee"]["max_client_epsilon"]


def test_a_release_seen_before_its_round_ended_is_charged(tmp_path, monkeypatch):
    """Central DP with client evaluation: round 2's noised model reaches the evaluating
    clients before the round's record is written. Ctrl-C right then, and the resumed run
    releases round 2 again with fresh noise: both releases must be in the ledger (before,
    only the rerun's was: the first was written with the record that never came)."""
    from strategies.statistics import StatisticsStrategy

    cfg = _cfg(
        [
            "evaluate.fraction=1.0",
            "privacy.dp=client",
            "privacy.clip-norm=1.0",
            "privacy.noise-multiplier=1.0",
            "privacy.clear-evaluation=true",
        ]
    )
    evaluate = StatisticsStrategy.aggregate_evaluate
    session = {"first": True}

    def interrupted(self, server_round, replies):
        result = evaluate(self, server_round, replies)
        if session["first"] and server_round == 2:  # Ctrl-C as the evaluations come in
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(StatisticsStrategy, "aggregate_evaluate", interrupted)
    run_dir = RunDirectory.create(tmp_path, cfg, "inprocess", exact=tmp_path / "run")
    with pytest.raises(KeyboardInterrupt), run_dir:
        run_engine(cfg, run_dir.append_round, None, run_dir.on_state, run_dir.append_release)
    session["first"] = False
    resume(run_dir.path, progress=False)
    rounds = [(e["round"], e.get("rerun", False)) for e in _events(run_dir.path)]
    assert rounds == [(1, False), (2, True), (2, False), (3, False), (4, False), (5, False)]


def _ledger_line(jsonl: str, i: int) -> str:
    return jsonl.splitlines()[i]


def test_ctrl_c_checkpoints_the_last_completed_round(tmp_path):
    """train.checkpoint-every = 3 and Ctrl-C in round 5: the interrupt checkpoints round 4,
    the model it saves, so the resumed run reruns only the round that never finished
    (round 5's DP release, seen before the interrupt, stays charged)."""
    overrides = [
        *[o for o in SETTINGS["fedadam-dp-secagg"] if "seeded-noise" not in o],
        "train.checkpoint-every=3",
    ]
    run = _interrupted(tmp_path, after=5, overrides=overrides)
    ckpt = checkpoint.load(run / "checkpoint.bin")
    assert ckpt.round == 4
    model = _state(run)
    assert all(torch.equal(model[k], torch.from_numpy(ckpt.arrays[k])) for k in model)
    result = resume(run, progress=False)
    assert result.summary["resumed_after_rounds"] == [4]
    rounds = [(e["round"], e.get("rerun", False)) for e in _events(run)]
    assert rounds == [(1, False), (2, False), (3, False), (4, False), (5, True), (5, False)]


def test_nodes_states_come_back_on_their_worker_processes(tmp_path):
    """Local DP's ledgers live on the nodes, here in two worker processes: the resumed run
    restores each on the worker that owns the node, and ends where one worker does."""
    reference = simulate(_cfg(LOCAL_DP), out=tmp_path / "whole", progress=False)
    run = _interrupted(tmp_path, overrides=[*LOCAL_DP, "engine.workers=2"])
    ckpt = checkpoint.load(run / "checkpoint.bin")
    assert ckpt.nodes  # the sampled nodes' ledgers
    resume(run, progress=False)
    a, b = _state(run), _state(reference.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "ledger.jsonl").read_text() == (reference.path / "ledger.jsonl").read_text()


def _simulate_in_a_child(tmp_path: Path, overrides: list[str], out: Path, **popen):
    """``fedcore simulate`` of ``overrides`` in a child process, its stderr piped."""
    from fedcore.config import to_toml

    scenario = tmp_path / "scenario.toml"
    scenario.write_text(to_toml(_cfg(overrides)))
    return subprocess.Popen(
        [sys.executable, "-m", "fedcore", "simulate", str(scenario), "--out", str(out), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_sigterm_leaves_an_interrupted_run_with_its_model_and_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    child = _simulate_in_a_child(tmp_path, ["train.rounds=40"], out)
    while (
        not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").read_text().count("\n") < 2
    ):
        assert child.poll() is None, child.stderr.read()
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143
    assert "interrupted" in err and f"--resume {out}" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] >= 2
    assert (out / "model.pt").exists() and (out / "checkpoint.bin").exists()
    assert main(["simulate", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["rounds"] == 40


@pytest.mark.slow
def test_the_ray_engine_is_interrupted_as_the_in_process_one(tmp_path):
    """Ray puts its own SIGTERM handler in (``sys.exit``: the run ended "failed", then its
    failure handler aborted the process, exit 134) and Flower's ServerApp thread outlived an
    interrupt (the process never exited, after Ctrl-C too). SIGTERM now ends a Ray run as
    the in-process one: interrupted, resumable. (Ctrl-C takes the same path; checked by
    hand, it costs the suite another Ray start.)"""
    sig = signal.SIGTERM
    out = tmp_path / "run"
    child = _simulate_in_a_child(
        tmp_path, ["engine.name=ray", "train.rounds=40"], out, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while (
            not (out / "metrics.jsonl").exists()
            or (out / "metrics.jsonl").read_text().count("\n") < 1
        ):
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.05)
        os.killpg(child.pid, sig)
        _, err = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 128 + sig, err[-2000:]
    assert f"--resume {out}" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["engine"] == "ray"
    assert (out / "model.pt").exists() and checkpoint.load(out / "checkpoint.bin").round >= 1


def _interrupted(tmp_path: Path, after: int = 3, overrides: list[str] = ()) -> Path:
    """A run stopped by Ctrl-C in round ``after`` (its checkpoint: round ``after - 1``)."""
    cfg = _cfg(list(overrides))
    run_dir = RunDirectory.create(tmp_path, cfg, "inprocess", exact=tmp_path / "run")

    def on_round(record):
        run_dir.append_round(record)
        if record["round"] == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), run_dir:
        run_engine(cfg, on_round, None, run_dir.on_state, run_dir.append_release)
    return run_dir.path


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_ctrl_c_keeps_the_last_completed_rounds_model(tmp_path):
    run = _interrupted(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] == 3
    assert (run / "model.pt").exists()
    ckpt = checkpoint.load(run / "checkpoint.bin")
    assert ckpt.round == 2  # the interrupt came before round 3's checkpoint
    result = resume(run, progress=False)
    assert result.summary["rounds"] == 5 and result.summary["resumed_after_rounds"] == [2]


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "truncate", "empty", "another magic"],
)
def test_a_damaged_checkpoint_is_refused_and_nothing_changes(tmp_path, damage):
    run = _interrupted(tmp_path)
    path = run / "checkpoint.bin"
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "empty":
        data = bytearray()
    else:
        data[:7] = b"PICKLE!"
    path.write_bytes(bytes(data))
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match=r"corrupted|not a fedcore checkpoint"):
        resume(run, progress=False)
    assert _snapshot(run) == before  # never half-loaded, nothing cut off


def test_resume_refuses_a_run_whose_files_do_not_match_its_checkpoint(tmp_path, capsys):
    run = _interrupted(tmp_path)
    before = _snapshot(run)
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(CheckpointError, match="truncated or edited"):
        resume(run, progress=False)
    (run / "metrics.jsonl").write_bytes(before["metrics.jsonl"])
    config = run / "config.toml"
    config.write_text(config.read_text().replace("rounds = 5", "rounds = 6"))
    assert main(["simulate", "--resume", str(run), "--quiet"]) == 2
    assert "another config.toml" in capsys.readouterr().err


def test_a_ledger_edited_between_the_crash_and_the_resume_is_refused(tmp_path):
    """Before, the checkpoint kept only each file's length: a ledger rewritten at the same
    length (a larger noise multiplier: a smaller epsilon) was resumed and then sealed."""
    overrides = [o for o in SETTINGS["fedadam-dp-secagg"] if "seeded-noise" not in o]
    run = _interrupted(tmp_path, overrides=overrides)
    ledger = run / "ledger.jsonl"
    text = ledger.read_text()
    forged = text.replace('"noise_multiplier": 0.5', '"noise_multiplier": 9.5', 1)
    assert forged != text and len(forged) == len(text)
    ledger.write_text(forged)
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="edited since the checkpoint"):
        resume(run, progress=False)
    assert _snapshot(run) == before


def test_resume_refuses_a_completed_run_and_arguments_it_would_ignore(tmp_path, capsys):
    done = simulate(_cfg(["train.rounds=1"]), out=tmp_path / "done", progress=False).path
    assert main(["simulate", "--resume", str(done)]) == 2
    assert "completed run" in capsys.readouterr().err
    assert main(["simulate", "--resume", str(done), "--set", "train.rounds=3"]) == 2
    assert "its own config.toml" in capsys.readouterr().err


def test_a_checkpoint_without_node_states_refuses_a_run_whose_nodes_keep_some(tmp_path):
    """Ray and deployed nodes are out of fedcore's reach: their checkpoints hold no node
    states, which a run with node-side ledgers or node-local arrays cannot do without."""
    run = _interrupted(tmp_path, overrides=LOCAL_DP)
    ckpt = checkpoint.load(run / "checkpoint.bin")
    checkpoint.save(run / "checkpoint.bin", Checkpoint(**{**ckpt.__dict__, "nodes": None}))
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="node's privacy ledger"):
        RunDirectory.reopen(run)
    assert _snapshot(run) == before


def test_a_simulated_run_whose_nodes_keep_state_does_not_resume_deployed(tmp_path):
    """Deployed SuperNodes start from their own state, not the checkpoint's: a simulated
    run with node-side ledgers would continue with its nodes' budgets forgotten."""
    import dataclasses

    run = _interrupted(tmp_path, overrides=LOCAL_DP)
    assert checkpoint.load(run / "checkpoint.bin").nodes  # the simulation kept them
    cfg = load_scenario(run / "config.toml")
    deployed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume_from=str(run)))
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match=r"deployed SuperNodes.*privacy ledger"):
        RunDirectory.reopen(run, deployed)
    assert _snapshot(run) == before


def test_a_resumed_nodes_ledger_is_charged_for_the_rounds_it_reruns(tmp_path):
    """Local DP, unseeded: each node's restored ledger gets its release of the rerun round,
    so its own budget check counts it."""
    from clients.privacy import LEDGER
    from simulations.engines.inprocess import FIRST_NODE_ID

    overrides = [o for o in LOCAL_DP if "seeded-noise" not in o]
    run = _interrupted(tmp_path, overrides=overrides)  # round 3 recorded, checkpoint at 2
    third = [e for e in _events(run) if e["round"] == 3]
    assert third
    run_dir, ckpt = RunDirectory.reopen(run)
    run_dir.unlock()
    for e in third:
        state = checkpoint.unpack_node_state(ckpt.nodes[FIRST_NODE_ID + e["client"]])
        kept = [json.loads(x) for x in state.config_records[LEDGER]["events"]]
        assert kept[-1] == {**e, "rerun": True}


def test_a_run_is_continued_by_one_process_at_a_time(tmp_path):
    run = _interrupted(tmp_path)
    first, _ = RunDirectory.reopen(run)  # holds the run, as a resumed process does
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="in use by another process"):
        RunDirectory.reopen(run)
    assert _snapshot(run) == before
    first.unlock()
    RunDirectory.reopen(run)[0].unlock()


def test_a_running_run_cannot_be_resumed_beside_it(tmp_path):
    cfg = _cfg([])
    live = RunDirectory.create(tmp_path, cfg, "inprocess", exact=tmp_path / "run")
    with pytest.raises(CheckpointError, match="in use by another process"):
        RunDirectory.reopen(live.path)
    live.unlock()


def test_a_run_that_failed_on_its_own_rounds_is_not_offered_a_resume(tmp_path):
    """Every client fails: the failure policy ends the run, and a resume would rerun the
    same seeded rounds into the same failure."""
    from fedcore.server import RunFailed

    cfg = _cfg(["faults.client-failure-rate=1.0", "train.max-failed-rounds=2"])
    with pytest.raises(RunFailed):
        simulate(cfg, out=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["resume"].startswith("not offered")


def test_which_runs_need_their_nodes_states_back():
    assert node_state_needed(_cfg([])) is None
    assert "ledger" in node_state_needed(_cfg(LOCAL_DP))
    mf = load_scenario(scenario_path("movielens-fcf"))
    assert "arrays on each node" in node_state_needed(mf)


def test_checkpoint_round_trip_keeps_every_field(tmp_path):
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    from fedcore.arrays import to_record

    state = RecordDict(
        {"a": to_record({"u": np.arange(6.0).reshape(2, 3)}), "c": ConfigRecord({"k": "v"})}
    )
    assert isinstance(state["a"], ArrayRecord)
    ckpt = Checkpoint(
        round=7,
        arrays={"w": np.ones((2, 2), np.float32), "b": np.zeros(3)},
        strategy={"clip": 0.5, "ledger": "", "previous": np.arange(4.0)},
        nodes={10_003: checkpoint.pack_node_state(state)},
        files={"metrics.jsonl": 12, "ledger.jsonl": 0},
        config_sha256="ab" * 32,
        elapsed=1.5,
        resumes=(3,),
    )
    checkpoint.save(tmp_path / "c.bin", ckpt)
    back = checkpoint.load(tmp_path / "c.bin")
    assert list(back.arrays) == ["w", "b"] and back.arrays["w"].dtype == np.float32
    assert np.array_equal(back.strategy["previous"], np.arange(4.0))
    assert back.strategy["clip"] == 0.5 and back.files == ckpt.files and back.resumes == (3,)
    node = checkpoint.unpack_node_state(back.nodes[10_003])
    assert np.array_equal(node["a"]["u"].numpy(), np.arange(6.0).reshape(2, 3))
    assert node["c"]["k"] == "v"
    assert not os.path.exists(tmp_path / "c.bin.tmp")


def _crashed_before_finish(tmp_path: Path, overrides: list[str]) -> Path:
    """A run whose round loop ended but whose process died before ``finish``."""
    cfg = _cfg(overrides)
    run_dir = RunDirectory.create(tmp_path, cfg, "inprocess", exact=tmp_path / "run")
    run_engine(cfg, run_dir.append_round, None, run_dir.on_state)
    run_dir.unlock()  # as the dead process's lock was
    return run_dir.path


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.rounds=8", "train.target-accuracy=0.5"],  # stops at the target
        [  # stops when the next round would pass the budget
            "privacy.dp=client",
            "privacy.noise-multiplier=1.0",
            "privacy.clip-norm=1.0",
            "privacy.budget-epsilon=13",
            "privacy.seeded-noise=true",
        ],
    ],
    ids=["target-accuracy", "budget"],
)
def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path, overrides):
    reference = simulate(_cfg(overrides), out=tmp_path / "whole", progress=False)
    assert reference.summary["rounds"] < _cfg(overrides).train.rounds  # it did stop early
    run = _crashed_before_finish(tmp_path, overrides)
    result = resume(run, progress=False)
    assert result.summary["status"] == "completed"
    assert result.summary["rounds"] == reference.summary["rounds"]
    a, b = _state(run), _state(reference.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
