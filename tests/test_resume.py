"""Resume: a training process killed (SIGKILL) mid-run continues from its last checkpoint, with the same params,
and ends exactly where an unbroken run ends; another config never picks the checkpoint up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import logging, os, signal, sys
    from functools import partial
    import lightning as L
    import torch
    from safetensors.torch import save_file
    from unirae_pipeline.diffusion import TransportConfig
    from unirae_pipeline.models import DiTConfig, build_dit
    from unirae_pipeline.training.data import TensorBatches
    from unirae_pipeline.params import run_key
    from unirae_pipeline.training.fit import EMASnapshot, TrainerConfig, fit
    from unirae_pipeline.training.modules import TrainModule, dit_objective
    from unirae_pipeline.training.optim import OptimConfig
    logging.basicConfig(level=logging.INFO)

    class Kill(L.Callback):  # a real kill, as a pre-empted job gets: no cleanup, no exception handling
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(os.environ.get("KILL_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = DiTConfig(32, 2, 2, 32, 1, 2, 2.0, 1, 0.1, 0.2, 16)
    model = build_dit(cfg, (8, 2, 2), 3, seed=0)
    optim = OptimConfig("steps", 30, 16, 2e-3, 1e-5, (0.9, 0.95), 0.0, 3, "cosine", None, None, 0.9, 1.0)
    module = TrainModule(model, optim, partial(dit_objective, transport=TransportConfig("uniform", 4096, 0.0, 1.0),
                                               shift=1.0))
    data = torch.randn(70, 8, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(70) % 3
    trainer = TrainerConfig("cpu", 1, 1, "auto", "32-true", 1, 4, False, int(sys.argv[2]))
    snapshot = EMASnapshot(12)
    curve = fit(module, TensorBatches(data, 16, seed=0), trainer, "resume", seed=0, callbacks=(snapshot, Kill()),
                run_key=run_key(config=sys.argv[3]))
    save_file({"ema." + k: v.contiguous() for k, v in module.ema.module.state_dict().items()}
              | {"guide." + k: v.contiguous() for k, v in snapshot.state.items()}
              | {"loss": torch.tensor(curve["loss"].to_numpy()), "step": torch.tensor(curve["step"].to_numpy())},
              sys.argv[1])
''')


def run(tmp_path, out: str, every: int, kill_at: int = 0, config: str = "a") -> subprocess.CompletedProcess:
    (tmp_path / "train.py").write_text(SCRIPT)
    env = {**os.environ, "KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, "train.py", out, str(every), config], cwd=tmp_path, env=env,
                           capture_output=True, text=True)


def test_killed_training_resumes_to_the_unbroken_result(tmp_path):
    unbroken = run(tmp_path, "unbroken.safetensors", every=5)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    assert not (tmp_path / ".cache" / "ckpts").exists() or not any((tmp_path / ".cache" / "ckpts").iterdir())

    killed = run(tmp_path, "resumed.safetensors", every=5, kill_at=17)
    assert killed.returncode == -signal.SIGKILL
    ckpts = list((tmp_path / ".cache" / "ckpts").glob("resume-*/last.ckpt"))
    assert len(ckpts) == 1
    other = run(tmp_path, "other.safetensors", every=5, kill_at=3, config="b")  # another config: a fresh run
    assert other.returncode == -signal.SIGKILL and "resuming" not in other.stderr

    resumed = run(tmp_path, "resumed.safetensors", every=5)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    a, b = load_file(tmp_path / "unbroken.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # EMA, guide snapshot and the whole loss curve
    assert not ckpts[0].exists()  # a finished run removes its resume checkpoints
