"""The whole DVC chain in a temporary copy of the repository, on the smoke profile."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import CHROMIUM_FLAGS, copy_repository, documentation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENV = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}


def run(args: list[str], cwd, **env: str) -> str:
    result = subprocess.run(args, cwd=cwd, env={**ENV, **env}, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def read_dit_meta(path) -> dict:
    """The metadata of a DiT file the pipeline wrote."""
    from unirae_pipeline.models.serialization import read_model_file

    return read_model_file(path, "dit", str(path)).meta


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A fresh git repo holding the tracked files (as a clone would), on the smoke profile."""
    dest = copy_repository(tmp_path_factory.mktemp("e2e") / "repo")
    for generated in ("dvc.lock",):
        (dest / generated).unlink(missing_ok=True)
    run(["python", "-m", "unirae_pipeline.tools.compose", "profile=smoke"], dest)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.name", "ci"], dest)
    run(["git", "config", "user.email", "ci@example.invalid"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "smoke"], dest)
    return dest


def test_dvc_repro_runs_all_stages_then_nothing(repo):
    first = run(["dvc", "repro"], repo)
    assert stages_run(first) == ["check_params", "prepare_data", "cache_latents", "latent_stats", "fid_reference",
                                 "train_rae", "train_dit", "train_guide", "sample", "evaluate"]
    metrics = yaml.safe_load((repo / "data/08_reporting/metrics.json").read_text())
    assert {"class_accuracy", "fd", "fd_untrained"} <= set(metrics)
    assert (repo / "data/08_reporting/samples.png").is_file()
    assert not list(repo.rglob(".*.tmp-*"))  # no temp leftovers of the atomic writes
    second = run(["dvc", "repro"], repo)
    assert stages_run(second) == [] and "up to date" in second


def test_exp_run_depth_reruns_only_the_dit_stages(repo):
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results"], repo)
    out = run(["dvc", "exp", "run", "-S", "profile=smoke", "-S", "dit.depth=2"], repo)
    assert stages_run(out) == ["check_params", "train_dit", "sample", "evaluate"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["dit"]["depth"] == 2
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    assert "class_accuracy" in shown and "dit.depth" in shown


def test_a_trained_autoguidance_guide_is_its_own_stage(repo):
    """guide=tiny trains a separate guide in train_guide, and only what reads it reruns; the main DiT is kept."""
    out = run(["dvc", "exp", "run", "-S", "profile=smoke", "-S", "dit.depth=2", "-S", "guide=tiny", "-S",
               "guide.duration=5", "-S", "sample.sampler.guidance=autoguidance"], repo)
    assert stages_run(out) == ["check_params", "train_guide", "sample", "evaluate"]
    assert read_dit_meta(repo / "data/06_models/dit_guide.safetensors")["source"] == "train"  # what sample guides by
    back = run(["dvc", "exp", "run", "-S", "profile=smoke", "-S", "dit.depth=2"], repo)  # the later tests' state
    assert "train_dit" not in stages_run(back)  # the rest comes back from DVC's run cache


def test_a_forced_rerun_with_the_same_result_stales_nothing(repo):
    """Outputs are byte-identical for identical content: rerunning a stage whose inputs did not change (here forced)
    leaves every stage downstream up to date."""
    def stale() -> dict:
        out = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=ENV, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert stale() == {}
    assert stages_run(run(["dvc", "repro", "-f", "-s", "latent_stats"], repo)) == ["latent_stats"]
    assert stale() == {}


def test_a_rejected_value_stops_the_run_before_any_output_is_removed(repo):
    """A value params.yaml cannot take (`sample.sampler=heun`: the key is sample.sampler.method; a misspelt new key; a
    NaN; your own images at a path that is not there) stops `dvc exp run` in its first stage, in one line naming the
    key and the fix, before any stage removes its outputs; composing valid values again reruns only that check,
    whose marker did not change."""
    outputs = [repo / "data/07_model_output/samples.npz", repo / "data/06_models/dit.safetensors",
               repo / "data/01_raw/image_set"]
    before = [p.stat().st_mtime_ns for p in outputs]
    for bad, said in ((["sample.sampler=heun"], "did you mean sample.sampler.method=heun?"),
                      (["+dit.dpeth=6"], "'dit.dpeth' is not a key of params.yaml (did you mean dit.depth?)"),
                      (["train_dit.lr=nan"], "'train_dit.lr' must be a finite number, got nan"),
                      (["data=folder", "data.root=/no/such/images"],
                       "data.root: ImageFolder path '/no/such/images' does not exist")):
        overrides = [arg for value in ["profile=smoke", "dit.depth=2", *bad] for arg in ("-S", value)]
        result = subprocess.run(["dvc", "exp", "run", *overrides], cwd=repo, env=ENV, capture_output=True, text=True)
        assert result.returncode != 0 and said in result.stdout + result.stderr, result.stderr[-3000:]
        assert stages_run(result.stdout + result.stderr) == ["check_params"]
        assert [p.stat().st_mtime_ns for p in outputs] == before  # nothing was removed or rewritten
    again = run(["dvc", "exp", "run", "-S", "profile=smoke", "-S", "dit.depth=2"], repo)
    assert stages_run(again) == ["check_params"] and [p.stat().st_mtime_ns for p in outputs] == before


def test_dvc_plots_draw_every_chart_offline(repo, tmp_path):
    """`dvc plots show` through the set-up's page template (`.dvc/config`: plots.html_template): the page loads
    nothing from a CDN, and in Chromium with every host name unresolvable each Vega chart draws (DVC's own page
    draws none there: only the two image grids appeared)."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/setup.sh installs it (Debian's package, as root)"
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    html = (tmp_path / "plots" / "index.html").read_text()
    charts = html.count("vegaEmbed(")
    assert charts >= 4 and "cdn." not in html and "samples.png" in html
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000", "--dump-dom",
                          (tmp_path / "plots" / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom)) == charts, dom[-2000:]


def test_kedro_runs_one_pipeline_on_its_own(repo):
    metrics = repo / "data/08_reporting/metrics.json"
    before = metrics.stat().st_mtime_ns
    run(["kedro", "run", "--pipelines", "evaluate"], repo)
    assert metrics.stat().st_mtime_ns > before and "fd" in json.loads(metrics.read_text())


def test_ddp_train_dit_under_kedro_writes_once(repo):
    """`trainer.strategy: ddp` on 2 CPU processes (gloo): Lightning re-launches `kedro run` for rank 1, both ranks
    train one model on their halves of each global batch, and only rank 0 writes the stage's outputs."""
    before = (repo / "data/06_models/dit.safetensors").stat().st_mtime_ns
    run(["kedro", "run", "--pipelines", "train_dit", "--params",
         "trainer.devices=2,trainer.strategy=ddp,train_dit.batch_size=32"], repo)
    assert (repo / "data/06_models/dit.safetensors").stat().st_mtime_ns > before
    assert read_dit_meta(repo / "data/06_models/dit.safetensors")["config"]["depth"] == 2  # a whole, readable file


def test_torchrun_launches_the_same_stage(repo):
    """The README's multi-process launch: torchrun starts the ranks, Lightning joins them (no re-launch)."""
    params = "trainer.devices=2,trainer.strategy=ddp,train_dit.batch_size=32"
    before = (repo / "data/06_models/dit.safetensors").stat().st_mtime_ns
    run(["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unirae_pipeline",
         "--pipelines", "train_dit", "--params", params], repo)
    assert (repo / "data/06_models/dit.safetensors").stat().st_mtime_ns > before
    assert read_dit_meta(repo / "data/06_models/dit.safetensors")["config"]["depth"] == 2


def test_torchrun_shards_cache_latents_across_ranks(repo):
    """cache_latents under torchrun: each rank encodes every other shard, rank 0 alone assembles the store, which
    holds what the 1-process `dvc repro` cached."""
    import torch
    from safetensors.torch import load_file

    def splits() -> dict[str, dict[str, torch.Tensor]]:
        store = repo / "data/04_feature/latents"
        out = {}
        for split in ("train", "val"):
            parts = [load_file(f) for f in sorted((store / split).glob("shard_*.safetensors"))]
            whole = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            order = torch.argsort(whole["rows"] * 2 + whole["flip"])  # shards of 100 interleave mirrors otherwise
            out[split] = {k: v[order] for k, v in whole.items()}
        return out

    before = splits()
    run(["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unirae_pipeline",
         "--pipelines", "cache_latents", "--params", "latents.shard_size=100"], repo)
    after = splits()
    for split in before:
        for key in ("labels", "rows", "flip"):
            assert torch.equal(before[split][key], after[split][key]), (split, key)
        torch.testing.assert_close(before[split]["latents"].float(), after[split]["latents"].float(), rtol=1e-2,
                                   atol=1e-2)
    assert not list((repo / ".cache" / "latents").glob("*/train/*.safetensors"))  # moved into the store


def test_torchrun_shards_sampling_across_ranks(repo):
    """The sample stage under torchrun: each rank makes every other shard on its own device, rank 0 alone writes the
    npz files and the grid, equal to what one process makes with the same params."""
    import numpy as np

    outputs = [repo / "data/07_model_output" / f for f in ("samples.npz", "samples_untrained.npz")]
    outputs.append(repo / "data/08_reporting/samples.png")
    kept = {p: p.read_bytes() for p in outputs if p.exists()}  # the pipeline's own outputs, put back afterwards
    try:
        params = "sample.batch_size=10,sample.shard_size=10"
        run(["kedro", "run", "--pipelines", "sample", "--params", params], repo)
        with np.load(outputs[0]) as f:
            alone = f["arr_0"], f["arr_1"]
        outputs[0].unlink()
        run(["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
             "unirae_pipeline", "--pipelines", "sample", "--params", params], repo)
        with np.load(outputs[0]) as f:
            assert np.array_equal(f["arr_0"], alone[0]) and np.array_equal(f["arr_1"], alone[1])
    finally:
        for path, data in kept.items():
            path.write_bytes(data)


def test_progress_bars_and_log_levels_come_from_the_environment(repo):
    """Quiet by default: the pipeline's own lines (a start and an end per node, one-line summaries, the untrained
    floor's too), none of Kedro's per-dataset lines, no bars off a terminal and a heartbeat every UNIRAE_HEARTBEAT_S
    seconds instead; UNIRAE_PROGRESS=1 draws the bars, counting the sampler's network evaluations;
    UNIRAE_LOG_LEVEL=WARNING leaves no INFO line, DEBUG adds Kedro's lines and per-shard lines."""
    quiet = run(["kedro", "run", "--pipelines", "sample"], repo)
    assert "sampled 40 images" in quiet and "img/s" in quiet and "sampling:" not in quiet
    assert "sample: started" in quiet and re.search(r"sample: done in [\d.]+ s", quiet)
    assert "untrained floor" in quiet and "Loading data from" not in quiet and "Running node" not in quiet
    beating = run(["kedro", "run", "--pipelines", "sample"], repo, UNIRAE_HEARTBEAT_S="0")
    assert re.search(r"sampling: \d+/\d+ eval, [\d.]+ eval/s", beating)
    bars = run(["kedro", "run", "--pipelines", "sample"], repo, UNIRAE_PROGRESS="1")
    assert re.search(r"sampling:\s+\d+%\|.*eval", bars)  # drawn (a short run may close before it shows 100%)
    silent = run(["kedro", "run", "--pipelines", "sample"], repo, UNIRAE_LOG_LEVEL="WARNING")
    assert "sampled 40 images" not in silent and " INFO " not in silent
    verbose = run(["kedro", "run", "--pipelines", "cache_latents"], repo, UNIRAE_LOG_LEVEL="DEBUG")
    assert "rank 0: train shard 0" in verbose and "Loading data from" in verbose


def test_a_killed_queue_worker_is_recovered_and_its_task_resumes_from_its_checkpoints(repo):
    """A queued train_dit killed with its worker (SIGKILL to the whole process group: a reboot, an out-of-memory
    kill) after its first checkpoint: the checkpoint is in the repository's scratch, not the queue's temporary copy;
    docs/troubleshooting.md's commands clear the task and its copy, and the same values queued again resume from
    that checkpoint and finish."""
    import signal
    import time

    values = ["-S", "profile=smoke", "-S", "train_dit.duration=400", "-S", "runtime.checkpoint_every_n_steps=10"]
    before = set((repo / ".cache" / "ckpts").glob("train_dit-*"))
    run(["dvc", "exp", "run", "--queue", "-n", "killed", *values], repo)
    worker = subprocess.Popen(["dvc", "queue", "start"], cwd=repo, env=ENV, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (made := [f for f in set((repo / ".cache" / "ckpts").glob("train_dit-*")) - before
                        if (f / "last.ckpt").is_file()]):
        assert time.time() < deadline, run(["dvc", "queue", "status"], repo)
        time.sleep(2)
    # `dvc queue start` daemonizes its worker inside the session it was started in: kill that whole session (the
    # worker, its task and the task's kedro run), as a reboot would
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(proc.name)) == worker.pid:
                    os.kill(int(proc.name), signal.SIGKILL)
    worker.wait()
    assert list((repo / ".dvc" / "tmp" / "exps").glob("tmp*"))  # the killed task's temporary copy is left behind
    # the documented recovery
    assert re.search(r"killed .*Running", run(["dvc", "queue", "status"], repo))  # what the user finds
    for clear in ("kill", "remove"):  # either may find the task gone already
        subprocess.run(["dvc", "queue", clear, "killed"], cwd=repo, env=ENV, capture_output=True)
    assert "killed" not in run(["dvc", "queue", "status"], repo)
    run(["dvc", "exp", "clean"], repo)
    for copy in (repo / ".dvc" / "tmp" / "exps").glob("tmp*"):
        shutil.rmtree(copy)
    run(["dvc", "exp", "run", "--queue", "-n", "retried", *values], repo)
    run(["dvc", "queue", "start"], repo)
    while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"], repo)):
        assert time.time() < deadline + 600, status
        time.sleep(5)
    assert "Success" in status, status
    assert f"resuming from {made[0] / 'last.ckpt'}" in run(["dvc", "queue", "logs", "retried"], repo)
    run(["dvc", "exp", "remove", "retried"], repo)  # the later tests compare their own experiments
    run(["dvc", "queue", "remove", "--all"], repo)


EXP_SHOW = ("dvc exp show --only-changed --drop Created|State|Executor|.*/.*|data\\.(source|lineage|shapes).*|"
            "num_.*|.*accuracy.*|"
            ".*_untrained|fd_ratio|precision|recall|psnr|ssim|recon_fd --keep "
            "^(fd|class_accuracy|inception_score|data/05_model_input/reference_stats.npz)$ --sort-by fd "
            "--sort-order asc")  # the README's curated table, quotes removed
REFERENCE = "data/05_model_input/reference_stats.npz"


def test_queued_sweep_curated_table_and_plots_of_every_experiment(repo, tmp_path):
    """The README's sweep: a queued grid run by `dvc queue start`, `dvc exp show` narrowed to what was swept with the
    metrics of each stage's file, and `dvc plots diff` of the experiments: loss curves, score bars and image grids."""
    import time

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "before the sweep", "--allow-empty"], repo)
    run(["dvc", "exp", "run", "--queue", "-S", "profile=smoke", "-S", "dit.depth=choice(1,3)"], repo)
    run(["dvc", "queue", "start", "-j", "1"], repo)
    deadline = time.time() + 900
    while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"], repo)):
        assert time.time() < deadline, status
        time.sleep(5)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    # the queue ran each task in a temporary copy (.dvc/tmp/exps) that is gone now, but relative runtime paths resolve
    # against the real repository (DVC_ROOT): each run's TensorBoard logs are here, as a killed one's checkpoints are
    depths = {yaml.safe_load(f.read_text())["dit.depth"] for f in (repo / "logs" / "train_dit").glob("*/hparams.yaml")}
    assert {1, 3} <= depths, depths
    shown = run(["dvc", "exp", "show", *EXP_SHOW.split()[3:], "--no-pager"], repo, COLUMNS="400")
    assert max(map(len, shown.splitlines())) <= 120, shown  # readable in a 120-column terminal
    table = run(["dvc", "exp", "show", *EXP_SHOW.split()[3:], "--csv"], repo)
    header = table.splitlines()[0].split(",")
    fd = header.index("fd")
    assert header[3:] == ["class_accuracy", "fd", "dit.depth", REFERENCE]  # the scores, the swept param only, the
    # FD reference
    rows = [line.split(",") for line in table.splitlines()[1:] if line.split(",")[0]]
    assert len(rows) >= 2 and float(rows[0][fd]) <= float(rows[1][fd])  # best FD first
    assert len({row[header.index(REFERENCE)] for row in rows}) == 1  # one feature space: the FDs compare
    names = run(["dvc", "exp", "ls", "--name-only"], repo).split()
    assert len(names) >= 2
    run(["dvc", "plots", "diff", *names, "-o", str(tmp_path / "plots")], repo)
    html = (tmp_path / "plots" / "index.html").read_text()
    for expected in ("FD to the reference", "Class accuracy of the samples", "dit_loss.csv", "rae_loss.csv",
                     "classifier_loss.csv", "samples.png", "reconstructions.png"):
        assert expected in html, expected
    assert len(list((tmp_path / "plots").rglob("*.png"))) >= 2 * len(names)  # the grids of every experiment
    best = rows[0][0]
    run(["dvc", "exp", "apply", best], repo)
    depth = yaml.safe_load((repo / "params.yaml").read_text())["dit"]["depth"]
    assert str(depth) == rows[0][header.index("dit.depth")]  # the best experiment's params are now the workspace's


def test_dvc_remote_shares_the_artefacts(repo, tmp_path):
    """The README's remote: `dvc remote add -d` and `dvc push`, then a fresh clone pulls the same results."""
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "store")], repo)
    run(["dvc", "push"], repo)
    assert any((tmp_path / "store").rglob("*"))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "remote", "--allow-empty"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for rel in ("data/08_reporting/metrics.json", "data/06_models/dit.safetensors"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel


def test_official_weights_profile_runs_the_readme_sample_lines(repo, tmp_path):
    """The README's official-weights profile: its conf/local/catalog.yml (paths and converter params swapped for the
    small official-code fixture) and its two `kedro run --pipelines sample` lines, verbatim: 50 per class in the ADM
    layout, unguided and with AutoGuidance."""
    import numpy as np
    import torch

    from .test_official import read_fixture
    from .test_readme import _bash_lines

    _, meta, dit_state, decoder_state = read_fixture()
    torch.save({"ema": dit_state, "model": {}}, tmp_path / "dit.pt")
    generator = torch.Generator().manual_seed(0)  # a guide that is not the model itself (the released one is smaller)
    guide = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if k.endswith(".weight") else v
             for k, v in dit_state.items()}
    torch.save({"ema": guide, "model": {}}, tmp_path / "guide.pt")
    torch.save(decoder_state, tmp_path / "decoder.pt")
    torch.save({"mean": None, "var": torch.rand(32, 4, 4) + 0.5}, tmp_path / "stat.pt")
    readme = documentation()
    catalog = yaml.safe_load(re.search(r"```yaml\n(dit:.*?)```", readme, re.S).group(1))
    assert set(catalog) == {"dit", "decoder", "latent_stats", "dit_guide"}
    files = {"dit": "dit.pt", "dit_guide": "guide.pt", "decoder": "decoder.pt", "latent_stats": "stat.pt"}
    for name, entry in catalog.items():
        entry["filepath"] = str(tmp_path / files[name])
        if "params" in entry:
            entry["params"] = meta["decoder" if name == "decoder" else "dit"]
    local = repo / "conf/local/catalog.yml"
    local.write_text(yaml.safe_dump(catalog))
    try:
        lines = [line for line in _bash_lines() if line.startswith("kedro run --pipelines sample")]
        assert len(lines) == 2 and "guidance=autoguidance" in lines[1] and "autoguidance" not in lines[0]
        made = []
        for line in lines:
            run([t.strip('"') for t in re.findall(r'"[^"]*"|\S+', line.split("  #")[0])], repo)
            with np.load(repo / "data/07_model_output/samples.npz") as npz:
                assert npz["arr_0"].shape == (500, 16, 16, 3) and np.bincount(npz["arr_1"]).tolist() == [50] * 10
                made.append(npz["arr_0"])
        assert not np.array_equal(*made)  # the released guide changed the samples
    finally:
        local.unlink()
