"""Scratch space: run folders record their params; the prune command keeps what the workspace or an experiment uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from unirae_pipeline.runtime.ranks import claimed
from unirae_pipeline.runtime.scratch import RunKey, flatten


def test_run_folders_record_the_params_of_their_key(tmp_path):
    run = RunKey(params={"dit": {"depth": 2, "betas": [0.9, 0.95]}, "seed": 0}, inputs={"latents": {"count": 10}})
    folder = run.folder(tmp_path / "ckpts", prefix="train_dit-")
    assert folder.name == f"train_dit-{run.key}" and folder.is_dir()
    assert RunKey(run.params, {"latents": {"count": 11}}).key != run.key  # the inputs are part of the key
    assert (folder / "params.json").read_text().strip() == (
        '{"dit.betas": [0.9, 0.95], "dit.depth": 2, "seed": 0}')
    assert flatten({"a": {"b": {"c": 1}}, "d": {}}) == {"a.b.c": 1, "d": {}}


def test_prune_removes_only_what_neither_the_workspace_nor_an_experiment_uses(tmp_path, monkeypatch):
    """A DVC project whose workspace trains depth 2 and whose saved experiment trains depth 4: the folders of those
    runs stay, the depth-8 run's goes (only with --prune), and a folder without a record is never touched. On a
    scratch space another clone shares, that clone's folders stay unless --all-repositories (they removed its resume
    checkpoints)."""
    monkeypatch.chdir(tmp_path)  # the runs below belong to this repository
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out

    run("git", "init", "-q")
    run("git", "config", "user.name", "ci")
    run("git", "config", "user.email", "ci@example.invalid")
    run("dvc", "init", "-q")
    params = "seed: 0\ndit:\n  depth: {}\nruntime:\n  scratch: scratch\n"
    (tmp_path / "params.yaml").write_text(params.format(2))
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: echo trained\n    params: [seed, dit]\n")
    run("dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "depth 2")
    (tmp_path / "params.yaml").write_text(params.format(4))
    run("dvc", "exp", "save", "-n", "deeper")
    (tmp_path / "params.yaml").write_text(params.format(2))

    ckpts = tmp_path / "scratch" / "ckpts"
    folders = {depth: RunKey({"dit": {"depth": depth}, "seed": 0}).folder(ckpts, prefix="train_dit-")
               for depth in (2, 4, 8)}
    for folder in folders.values():
        (folder / "last.ckpt").write_bytes(b"weights")
    unrecorded = tmp_path / "scratch" / "latents" / "0123456789ab"
    unrecorded.mkdir(parents=True)

    run(sys.executable, "-m", "unirae_pipeline.tools.scratch")  # the dry run lists, removes nothing
    assert all(f.is_dir() for f in folders.values()) and unrecorded.is_dir()
    running = RunKey({"dit": {"depth": 16}, "seed": 0}).folder(ckpts, prefix="train_dit-")  # a queued experiment's
    with claimed(running):  # a run in progress, whatever its params: never pruned under it
        run(sys.executable, "-m", "unirae_pipeline.tools.scratch", "--prune")
    assert {d for d, f in folders.items() if f.is_dir()} == {2, 4} and unrecorded.is_dir() and running.is_dir()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "other-clone"))
    theirs = RunKey({"dit": {"depth": 32}, "seed": 0}).folder(ckpts, prefix="train_dit-")
    assert (theirs / "repository.txt").read_text().strip() == str(tmp_path / "other-clone")
    run(sys.executable, "-m", "unirae_pipeline.tools.scratch", "--prune")
    assert theirs.is_dir()
    run(sys.executable, "-m", "unirae_pipeline.tools.scratch", "--prune", "--all-repositories")
    assert not theirs.is_dir() and folders[2].is_dir()


def test_relative_scratch_and_logs_belong_to_the_repository_dvc_runs(tmp_path, monkeypatch):
    """`dvc queue` runs each task in a temporary copy of the repository and points DVC_ROOT at the real one: a relative
    `runtime.scratch` (checkpoints, shards) and `runtime.logs` resolve there, so a retried task resumes and
    TensorBoard finds the logs; a plain `kedro run` uses its folder; an absolute path is kept."""
    from unirae_pipeline.runtime import RuntimeConfig

    cfg = RuntimeConfig(0, 1, 0, False, "cpu", ".cache", "logs/tensorboard")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert cfg.scratch_dir("ckpts") == tmp_path / ".cache" / "ckpts" and cfg.logs_dir == tmp_path / "logs/tensorboard"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert cfg.scratch_dir("ckpts") == tmp_path / "repo" / ".cache" / "ckpts"
    assert cfg.logs_dir == tmp_path / "repo" / "logs" / "tensorboard"
    shared = RuntimeConfig(0, 1, 0, False, "cpu", "/scratch/shared", "logs")
    assert shared.scratch_dir("latents") == Path("/scratch/shared/latents")
