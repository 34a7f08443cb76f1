"""Resume: a training process killed (SIGKILL) mid-run continues from its last checkpoint, with the same params,
and ends exactly where an unbroken run ends; another config never picks the checkpoint up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # each test kills a training process and resumes it

SCRIPT = textwrap.dedent('''
    import logging, os, signal, sys
    from functools import partial
    import lightning as L
    import torch
    from safetensors.torch import save_file
    from unirae_pipeline.diffusion.transport import TransportConfig
    from unirae_pipeline.models.dit import DiTConfig, build_dit
    from unirae_pipeline.training.data import TensorBatches
    from unirae_pipeline.runtime.scratch import RunKey
    from unirae_pipeline.runtime import RuntimeConfig
    from unirae_pipeline.training.fit import EMASnapshot, TrainerConfig, fit
    from unirae_pipeline.training.modules import TrainModule
    from unirae_pipeline.training.objectives import dit_objective
    from unirae_pipeline.training.optim import OptimConfig
    logging.basicConfig(level=logging.INFO)

    class Kill(L.Callback):  # a real kill, as a pre-empted job gets: no cleanup, no exception handling
        first = None

        def on_train_batch_end(self, trainer, *args):
            if self.first is None:  # the first step this process ran: 1, or one past a resumed checkpoint's
                self.first = trainer.global_step
                with open(sys.argv[1] + ".first", "w") as f:
                    f.write(str(self.first))
            if trainer.global_step == int(os.environ.get("KILL_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = DiTConfig(32, 2, 2, 32, 1, 2, 2.0, 1, 0.1, 0.2, 16)
    model = build_dit(cfg, (8, 2, 2), 3, seed=0)
    optim = OptimConfig("steps", 30, 16, 2e-3, 1e-5, (0.9, 0.95), 0.0, 3, "cosine", None, None, 0.9, 1.0, False)
    transport = TransportConfig("uniform", 4096, 0.0, 1.0, "mean_var")
    module = TrainModule(model, optim, partial(dit_objective, transport=transport, shift=1.0))
    data = torch.randn(70, 8, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(70) % 3
    trainer = TrainerConfig("cpu", 1, 1, "auto", "32-true", 1)
    run = RuntimeConfig(0, 4, int(sys.argv[2]), False, "cpu", ".cache", "logs")
    snapshot = EMASnapshot(12)
    curve = fit(module, TensorBatches(data, 16, seed=0), trainer, run, "resume", seed=0, callbacks=(snapshot, Kill()),
                key=RunKey({"config": sys.argv[3]}))
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
    assert other.returncode == -signal.SIGKILL and (tmp_path / "other.safetensors.first").read_text() == "1"

    resumed = run(tmp_path, "resumed.safetensors", every=5)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "resumed.safetensors.first").read_text() == "16"  # on from the step-15 checkpoint
    a, b = load_file(tmp_path / "unbroken.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # EMA, guide snapshot and the whole loss curve
    assert not ckpts[0].exists()  # a finished run removes its resume checkpoints


CACHE_SCRIPT = textwrap.dedent('''
    import logging, os, signal, sys
    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.data.encoding import CacheConfig
    from unirae_pipeline.io.latent_store import LatentStoreDataset
    from unirae_pipeline.models.encoder import EncoderConfig
    from unirae_pipeline.pipelines.cache_latents import nodes
    from unirae_pipeline.runtime import RuntimeConfig
    logging.basicConfig(level=logging.INFO)

    real, written = nodes.save_shard, []

    def save_then_maybe_die(*args, **kwargs):  # a real kill right after a shard is complete
        real(*args, **kwargs)
        written.append(args[0])
        if len(written) == int(os.environ.get("KILL_AFTER", "0")):
            os.kill(os.getpid(), signal.SIGKILL)

    nodes.save_shard = save_then_maybe_die
    encoder = EncoderConfig(model="vit_small_patch14_reg4_dinov2", weights="none", input_size=16,
                            overrides={"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2})
    latents = CacheConfig(batch_size=8, shard_size=16, dtype=sys.argv[2], precision="fp32", hflip=True)
    runtime = RuntimeConfig(num_workers=int(os.environ.get("WORKERS", "0")), log_every_n_steps=1,
                            checkpoint_every_n_steps=0, compile=False, device="cpu", scratch=".cache", logs="logs")
    cache = nodes.cache_latents(scan_image_folder("imgs"), 16, encoder, latents, 0, runtime)
    LatentStoreDataset(filepath=sys.argv[1]).save(cache)
    with open(sys.argv[1] + ".written", "w") as f:  # the shards this process encoded
        f.write(str(len(written)))
''')


def test_killed_latent_caching_keeps_complete_shards(tmp_path):
    """Killed after two shards, resumed with more data-loading workers (a runtime setting, in no resume key): the
    complete shards are kept and the store equals the unbroken run's; other params never reuse them."""
    from .conftest import write_folder

    write_folder(tmp_path / "imgs", {"a": 20, "b": 20})  # 40 train + 40 val images: 3 + 3 shards of 16
    (tmp_path / "cache.py").write_text(CACHE_SCRIPT)

    def cache(out: str, kill_after: int = 0, dtype: str = "bfloat16", workers: int = 0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "cache.py", out, dtype], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "KILL_AFTER": str(kill_after), "WORKERS": str(workers)})

    assert cache("unbroken").returncode == 0
    killed = cache("resumed", kill_after=2)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "resumed").exists()
    partial = list((tmp_path / ".cache" / "latents").glob("*/train/shard_*.safetensors"))
    assert len(partial) == 2
    other = cache("other", kill_after=1, dtype="float32")  # other params: never the bf16 run's shards
    assert other.returncode == -signal.SIGKILL
    shards = list((tmp_path / ".cache" / "latents").glob("*/train/shard_*.safetensors"))
    assert len(shards) == 3 and len({p.parent.parent for p in shards}) == 2  # its first shard, in its own folder
    resumed = cache("resumed", workers=2)  # a runtime setting changed: the shards are still this run's
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "resumed.written").read_text() == "4"  # 6 shards, 2 kept
    files = sorted(p.relative_to(tmp_path / "unbroken") for p in (tmp_path / "unbroken").rglob("*.safetensors"))
    assert len(files) == 6
    for rel in files:
        a, b = load_file(tmp_path / "unbroken" / rel), load_file(tmp_path / "resumed" / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    assert not any(p.exists() for p in partial)  # assembled into the store


RAE_SCRIPT = textwrap.dedent('''
    import json, logging, os, signal, sys
    import lightning as L
    import torch
    from safetensors.torch import save_file
    from unirae_pipeline.data.crops import RandomCrops
    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder
    from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder
    from unirae_pipeline.config.build import build
    from unirae_pipeline.runtime import RuntimeConfig
    from unirae_pipeline.runtime.scratch import RunKey
    from unirae_pipeline.training.data import KeyedBatches
    from unirae_pipeline.training.fit import TrainerConfig, fit
    from unirae_pipeline.training.rae import RAEModule, RAETrainConfig
    logging.basicConfig(level=logging.INFO)

    class Kill(L.Callback):
        first = None

        def on_train_batch_end(self, trainer, *args):
            if self.first is None:  # the first step this process ran
                self.first = trainer.global_step
                with open(sys.argv[1] + ".first", "w") as f:
                    f.write(str(self.first))
            if trainer.global_step == int(os.environ.get("KILL_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)

    tiny = json.loads(sys.argv[3])  # the sizes of the DINO weights file
    cfg = build(RAETrainConfig, dict(
        unit="steps", duration=14, batch_size=8, lr=1e-3, final_lr=1e-5, betas=[0.9, 0.95], weight_decay=0.0, warmup=2,
        schedule="cosine", decay_start=None, decay_end=None, ema_decay=0.9, grad_clip=0.0, fit_batch=False,
        source="images", resize_ratio=1.25, encoder_rope_rescale=None, lpips_weight=1.0, lpips_start=0,
        gan_weight=0.75, disc_start=6, disc_upd_start=4, max_d_weight=1e4, diffaug=True, train_tables=False, tf32=False,
        lpips={"vgg_weights": "vgg16.pth", "heads_weights": sys.argv[2]},
        disc={"model": "vit_small_patch8_224", "weights": "dino.pth", "input_size": 32, "key_depths": [1],
              "kernel_size": 3, "overrides": tiny}), "train_rae")
    encoder = FrozenEncoder(EncoderConfig("vit_small_patch14_reg4_dinov2", "none", 16,
                                          {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}), 0)
    torch.manual_seed(0)
    module = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.3, "uniform"), 32, 4), cfg, encoder)
    crops = RandomCrops(scan_image_folder("imgs"), "train", 16, 20, seed=0)
    trainer = TrainerConfig("cpu", 1, 1, "auto", "32-true", 1)
    run = RuntimeConfig(0, 1, 5, False, "cpu", ".cache", "logs")
    curve = fit(module, KeyedBatches(crops, 8, seed=0), trainer, run, "rae", seed=0, callbacks=(Kill(),),
                key=RunKey({"config": "rae"}))
    heads = {"disc." + k: v.contiguous() for k, v in module.disc.heads.state_dict().items()}
    save_file({"ema." + k: v.contiguous() for k, v in module.ema.module.state_dict().items()} | heads
              | {c: torch.tensor(curve[c].to_numpy()) for c in curve.columns}, sys.argv[1])
''')


def test_killed_stage1_gan_training_resumes_to_the_unbroken_result(tmp_path):
    """Stage 1 with LPIPS and the discriminator, on random crops encoded online: killed after the discriminator
    started, resumed, equal to the unbroken run (decoder EMA, heads, every loss term of the curve)."""
    from .conftest import write_folder
    from .test_train_rae import LPIPS_HEADS, TINY_DINO, write_random_weights

    write_folder(tmp_path / "imgs", {"a": 12, "b": 12}, size=24)
    write_random_weights(tmp_path)  # vgg16.pth, dino.pth
    (tmp_path / "rae.py").write_text(RAE_SCRIPT)

    def train(out: str, kill_at: int = 0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "rae.py", out, LPIPS_HEADS, json.dumps(TINY_DINO)], cwd=tmp_path,
                              capture_output=True, text=True, env={**os.environ, "KILL_AT": str(kill_at)})

    unbroken = train("unbroken.safetensors")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    killed = train("resumed.safetensors", kill_at=8)
    assert killed.returncode == -signal.SIGKILL
    resumed = train("resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "resumed.safetensors.first").read_text() == "6"  # on from the step-5 checkpoint
    a, b = load_file(tmp_path / "unbroken.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys() and {"disc", "gan", "lpips"} <= a.keys()
    for key in a:
        assert torch.equal(a[key].nan_to_num(), b[key].nan_to_num()), key
