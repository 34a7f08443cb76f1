"""The benchmark scripts run at tiny size on the CPU (their GPU runs are recorded in bench/results/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def _bench(script: str, args: list[str], out) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--device", "cpu", *args, "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (file,) = out.glob("*.json")
    return json.loads(file.read_text())


@pytest.mark.slow
def test_bench_dit_tiny(tmp_path):
    res = _bench("bench_dit.py", ["--sizes", "tiny", "--steps", "2", "--warmup", "1", "--sample-steps", "3",
                                  "--sample-batch", "8", "--no-compile", "--pipeline"], tmp_path)
    train = res["train"]["tiny"]
    assert res["device"] == "cpu" and train["ratio_vs_eager_fp32"]["eager_fp32_foreach"] == 1.0
    assert train["img_per_s"]["eager_fp32_foreach"] > 0 and res["sample"]["tiny"]["img_per_s"]
    assert train["img_per_s"]["train_dit_fit_eager"] > 0  # the stage's own Lightning loop, timed after warm-up
    guided = _bench("bench_dit.py", ["--sizes", "tiny", "--sample-only", "--guide", "tiny", "--sample-steps", "3",
                                     "--sample-batch", "8", "--no-compile"], tmp_path / "guided")
    assert not guided["train"] and set(guided["sample"]["tiny"]["img_per_s"]) == {"eager_fp32",
                                                                                  "eager_fp32_autoguidance_tiny"}


def test_bench_data_tiny(tmp_path):
    res = _bench("bench_data.py", ["--size", "tiny", "--latents", "1024", "--batch", "64", "--batches", "4",
                                   "--images", "64", "--workers", "0", "1", "--step-rate", "100"], tmp_path)
    path, cache = res["latent_path"], res["caching"]
    assert set(path["samples_per_s"]) == {"in_memory", "mmap_0_workers", "mmap_1_workers", "checksum_once_per_run"}
    assert path["ratio_vs_in_memory"]["in_memory"] == 1.0 and all(v > 0 for v in path["samples_per_s"].values())
    assert path["feed_margin_vs_step_rate"]["mmap_0_workers"] == path["samples_per_s"]["mmap_0_workers"] / 100
    assert cache["img_per_s"]["cache_fp32_1_workers"] > 0
    assert cache["latents_per_s"]["cache_fp32_1_workers"] == 2 * cache["img_per_s"]["cache_fp32_1_workers"]


@pytest.mark.slow
def test_the_prepared_gpu_run_works_small_on_the_cpu(tmp_path):
    """bench/gpu_run.sh, the one script a GPU session runs, end to end at tiny size."""
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu",
           "DIT_ARGS": "--sizes tiny --batch 16 --steps 2 --warmup 1 --sample-batch 4 --sample-steps 3 --no-compile",
           "DATA_ARGS": "--size tiny --latents 256 --batch 16 --batches 3 --images 32 --workers 0 1",
           "RAEV2_ARGS": "--size tiny --batch 4 --steps 1 --warmup 1"}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    dit, data = (json.loads(next(tmp_path.glob(f"{k}-*.json")).read_text()) for k in ("dit", "data"))
    assert dit["train"]["tiny"]["img_per_s"]["train_dit_fit_eager"] > 0
    assert data["latent_path"]["feed_margin_vs_step_rate"]["in_memory"] > 0
    assert json.loads(next(tmp_path.glob("raev2-*.json")).read_text())["img_per_s"]["cached_latents"] > 0


def test_bench_encoders_tiny(tmp_path):
    res = _bench("bench_encoders.py", ["--presets", "tiny", "--batch", "4", "--steps", "2", "--warmup", "1"], tmp_path)
    assert res["baseline"] == "tiny fp32" and res["ratio"]["tiny fp32"] == 1.0
    assert set(res["img_per_s"]) == {"tiny fp32", "tiny bf16"} and all(v > 0 for v in res["img_per_s"].values())


@pytest.mark.slow
def test_bench_raev2_tiny(tmp_path):
    """RAEv2's step on cached latents against the same step encoding online, with and without the optimizer."""
    res = _bench("bench_raev2.py", ["--size", "tiny", "--batch", "4", "--steps", "1", "--warmup", "1"], tmp_path)
    assert res["latent_shape"] == [64, 4, 4] and res["ratio_vs_online"]["online_encoding"] == 1.0
    assert set(res["img_per_s"]) == {"cached_latents", "online_encoding", "cached_latents_no_optimizer",
                                     "online_encoding_no_optimizer"} and all(v > 0 for v in res["img_per_s"].values())
