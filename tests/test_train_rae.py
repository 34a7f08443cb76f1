"""Stage 1: LPIPS against the reference package, the DINO discriminator, DiffAug, the GAN schedule of the decoder
training and its data path (online encoder on random crops)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import lpips
import numpy as np
import pytest
import timm
import torch
import torchvision

from unirae_pipeline.config.build import build
from unirae_pipeline.data.crops import CentreCrops, RandomCrops
from unirae_pipeline.data.loading import ImageDataset
from unirae_pipeline.interop.loss_weights import disc_state, lpips_states
from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder
from unirae_pipeline.models.discriminator import DinoDiscriminator, DiscConfig
from unirae_pipeline.models.perceptual import LPIPS, LPIPSConfig
from unirae_pipeline.training.data import KeyedBatches, TensorBatches, batch_indices
from unirae_pipeline.training.fit import TrainerConfig, fit
from unirae_pipeline.training.rae import (
    RAEModule,
    RAETrainConfig,
    adaptive_weight,
    diff_augment,
    hinge_d_loss,
    to_8bit,
)

from .conftest import runtime, write_folder

TINY_DINO = {"depth": 4, "embed_dim": 32, "num_heads": 2}
LPIPS_HEADS = str(Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth")  # the real LPIPS v0.1 heads


def write_random_weights(folder: Path) -> dict[str, str]:
    """Randomly initialised networks of the real architectures (VGG16 features, a tiny DINO ViT/8), saved in the
    released files' layouts."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16().features.state_dict()
    torch.save({f"features.{k}": v for k, v in vgg.items()}, folder / "vgg16.pth")
    dino = timm.create_model("vit_small_patch8_224", num_classes=0, img_size=32, **TINY_DINO).state_dict()
    torch.save(dino, folder / "dino.pth")
    return {"vgg": str(folder / "vgg16.pth"), "dino": str(folder / "dino.pth")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    return write_random_weights(tmp_path_factory.mktemp("weights"))


def recipe(weights: dict[str, str], **over) -> dict:
    base = dict(unit="steps", duration=12, batch_size=8, lr=1e-3, final_lr=1e-5, betas=[0.9, 0.95], weight_decay=0.0,
                warmup=2, schedule="cosine", decay_start=None, decay_end=None, ema_decay=0.9, grad_clip=0.0,
                fit_batch=False, source="latents", resize_ratio=1.25, encoder_rope_rescale=None, lpips_weight=1.0,
                lpips_start=0, gan_weight=0.75, disc_start=6, disc_upd_start=4, max_d_weight=1e4, diffaug=True,
                train_tables=False, tf32=False,
                lpips={"vgg_weights": weights["vgg"], "heads_weights": LPIPS_HEADS},
                disc={"model": "vit_small_patch8_224", "weights": weights["dino"], "input_size": 32,
                      "key_depths": [1, 2], "kernel_size": 3, "overrides": TINY_DINO})
    return {**base, **over}


def test_lpips_equals_the_reference_implementation(weights):
    # offline: pretrained=True reads the heads shipped inside the package, pnet_rand=True keeps VGG random
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict({f"slice{i + 1}.{k.split('.')[1]}.{k.split('.')[2]}": v
                             for k, v in torch.load(weights["vgg"], weights_only=True).items()
                             for i, (a, b) in enumerate(((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)))
                             if a <= int(k.split(".")[1]) < b})
    ours = LPIPS(*lpips_states(LPIPSConfig(weights["vgg"], LPIPS_HEADS)))
    torch.manual_seed(1)
    x, y = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = ref(x, y).flatten()
    torch.testing.assert_close(ours(x, y), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(ours(x, x) == 0)
    assert not any(p.requires_grad for p in ours.parameters())


def test_missing_or_wrong_perceptual_weights_are_clear_errors(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="train_rae.lpips.vgg_weights"):
        build(RAETrainConfig, recipe(weights, lpips={"vgg_weights": None, "heads_weights": LPIPS_HEADS}),
              "train_rae").check_environment()
    with pytest.raises(FileNotFoundError, match="train_rae.disc.weights"):
        build(RAETrainConfig, recipe(weights, disc={**recipe(weights)["disc"], "weights": "nope.pth"}),
              "train_rae").check_environment()
    # off, the same missing files are not needed: the embedded default runs without them
    build(RAETrainConfig, recipe(weights, lpips_weight=0.0, gan_weight=0.0, lpips={"vgg_weights": None,
                                 "heads_weights": None}, disc={**recipe(weights)["disc"], "weights": None}),
          "train_rae").check_environment()
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="train_rae.lpips.vgg_weights: missing keys"):
        LPIPS(*lpips_states(LPIPSConfig(str(tmp_path / "bad.pth"), LPIPS_HEADS)))


def test_dino_discriminator_heads_and_backbone(weights, tmp_path):
    cfg = DiscConfig("vit_small_patch8_224", weights["dino"], 32, (1, 2), 3, TINY_DINO)
    disc = DinoDiscriminator(cfg, 0, disc_state(cfg))
    saved = torch.load(weights["dino"], weights_only=True)
    assert torch.equal(disc.backbone.state_dict()["pos_embed"], saved["pos_embed"])
    assert disc.taps == [3, 1, 2]
    logits = disc(torch.rand(2, 3, 16, 16) * 2 - 1)  # resized to the backbone's 32 px: 16 tokens per head
    assert logits.shape == (2, 3 * 16)
    trainable = {n.split(".")[0] for n, p in disc.named_parameters() if p.requires_grad}
    assert trainable == {"heads"}
    disc.train()
    assert not disc.backbone.training
    # the reference's S/8: five token maps of 784 tokens, 7.39 M trainable parameters in the heads
    full = DinoDiscriminator(DiscConfig("vit_small_patch8_224", "none", 224, (2, 5, 8, 11), 9))
    assert sum(p.numel() for p in full.heads.parameters()) == 7_386_245
    assert full.taps == [11, 2, 5, 8, 11]
    torch.save({"blocks.0.wrong": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="train_rae.disc.weights"):
        bad = DiscConfig("vit_small_patch8_224", str(tmp_path / "bad.pth"), 32, (1,), 3, TINY_DINO)
        DinoDiscriminator(bad, 0, disc_state(bad))
    with pytest.raises(ValueError, match="takes the backbone's state dict exactly when"):
        DinoDiscriminator(bad)  # a weights file named, but no state dict given


def test_diffaug_translation_colour_and_8bit_fakes():
    torch.manual_seed(0)
    zeros = diff_augment(torch.zeros(64, 3, 16, 16))
    # an all-zero image stays uniform (zero fill); only the brightness shift remains
    per_image = zeros.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1]) and per_image.abs().max() <= 0.5
    torch.manual_seed(0)
    again = diff_augment(torch.zeros(64, 3, 16, 16))
    assert torch.equal(zeros, again)
    # a grey image: saturation is a no-op and the rest is increasing-affine per image, so the zero-filled pixels
    # of the translation are the ones below the image's maximum: full rows and columns at the edges, <= 16/8 deep
    shifted = 0
    for img in diff_augment(torch.ones(64, 3, 16, 16)):
        fill = (img < img.max() - 1e-5).all(0)
        rows, cols = fill.all(1), fill.all(0)
        assert torch.equal(fill, rows[:, None] | cols[None, :])
        for band in (rows, cols):
            k = int(band.sum())
            assert k <= 2 and (bool(band[:k].all()) or bool(band[16 - k:].all()))
        shifted += bool(fill.any())
    assert shifted > 32  # P(no shift on either axis) = 1/25
    x = torch.linspace(-1.3, 1.3, 1000)
    q = to_8bit(x)
    assert q.min() == -1 and q.max() == 1
    assert torch.allclose((q + 1) * 127.5, ((q + 1) * 127.5).round(), atol=1e-4)
    assert hinge_d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])) == pytest.approx(0.5 * (0.5 + 0.75))


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 3)
    rec, gan = (x @ layer.T).pow(2).mean(), (x @ layer.T).sin().mean()
    expected = torch.autograd.grad(rec, layer, retain_graph=True)[0].norm() / \
        (torch.autograd.grad(gan, layer, retain_graph=True)[0].norm() + 1e-6)
    assert adaptive_weight(rec, gan, layer, 1e4) == pytest.approx(float(expected), rel=1e-6)
    assert adaptive_weight(rec, gan * 1e-9, layer, 3.0) == 3.0


def _trainer() -> TrainerConfig:
    return TrainerConfig("cpu", 1, 1, "auto", "32-true", 1)


def _decoder() -> ViTDecoder:
    torch.manual_seed(0)
    return ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.3, "uniform"), 8, 4)


def test_gan_schedule_lpips_from_0_disc_updates_then_adversarial_term(weights):
    cfg = build(RAETrainConfig, recipe(weights), "train_rae")
    module = RAEModule(_decoder(), cfg)
    heads = copy.deepcopy(module.disc.heads.state_dict())
    z, images = torch.randn(64, 8, 4, 4), torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)

    class Probe(L.Callback):
        """After each optimizer step: whether the heads have moved, and the heads' LR."""

        def __init__(self) -> None:
            self.rows: list[tuple[int, bool, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            moved = any(not torch.equal(a, b) for a, b in zip(heads.values(),
                                                               pl_module.disc.heads.state_dict().values()))
            self.rows.append((trainer.global_step, moved, trainer.optimizers[0].param_groups[1]["lr"]))

    probe = Probe()
    curve = fit(module, TensorBatches((z, images), 8, seed=0), _trainer(), runtime(log_every_n_steps=1), "stage1", 0,
                callbacks=(probe,))
    # rows are recorded after optimizer step `step`; the terms of step s are in the row of step s + 1
    assert curve["lpips"].notna().all()
    assert curve.loc[curve.step <= 4, "disc"].isna().all() and curve.loc[curve.step > 4, "disc"].notna().all()
    assert curve.loc[curve.step <= 6, "gan"].isna().all() and curve.loc[curve.step > 6, "gan"].notna().all()
    assert (curve.loc[curve.step > 6, "gan_weight"] > 0).all()
    for step, moved, lr in probe.rows:
        assert moved == (step > 4)  # the heads stay put (LR 0, no gradient) before disc_upd_start
        assert (lr == 0) == (step < 4)
    assert module.ema.module is not module.model


def test_generator_pass_leaves_no_gradient_on_the_discriminator(weights):
    cfg = build(RAETrainConfig, recipe(weights, disc_start=0, disc_upd_start=100, duration=200), "train_rae")
    module = RAEModule(_decoder(), cfg)
    out = module.generator_loss(torch.randn(4, 8, 4, 4), torch.rand(4, 3, 16, 16))
    out["loss"].backward()
    assert all(p.grad is None for p in module.disc.parameters())
    assert module.model.decoder_pred.weight.grad is not None and "gan" in out


def test_accumulated_micro_batches_equal_one_whole_batch(weights, tmp_path, monkeypatch):
    """Stage 1 steps itself (two optimizer steps per batch): two accumulated micro-batches of 4 train the decoder and
    the heads as one batch of 8 does. Without latent noise, DiffAug and the adversarial term, whose draws and
    adaptive weight depend on the batch's split; the spectral norms run one power iteration per forward, so the heads
    agree to that (and their u, v are not compared)."""
    monkeypatch.chdir(tmp_path)  # Lightning's logs
    z, images = torch.randn(32, 8, 4, 4), torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    cfg = build(RAETrainConfig, recipe(weights, lpips_weight=0.0, disc_upd_start=2, disc_start=6, duration=5,
                                       diffaug=False, grad_clip=0.5), "train_rae")
    runs = []
    for batch, accumulate in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        module = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.0, "uniform"), 8, 4), cfg)
        trainer = TrainerConfig("cpu", 1, 1, "auto", "32-true", accumulate)
        curve = fit(module, TensorBatches((z, images), batch, seed=0), trainer, runtime(log_every_n_steps=1),
                    "stage1", 0)
        runs.append((module, curve))
    (whole, curve), (split, accumulated) = runs
    assert accumulated["step"].tolist() == curve["step"].tolist() == [1, 2, 3, 4, 5]
    assert accumulated["disc"].notna().tolist() == curve["disc"].notna().tolist() == [False] * 2 + [True] * 3
    # compared by what they compute: AdamW turns round-off gradients (the attention's key bias, the heads' biases
    # before their norm) into steps of up to the LR, with no effect on any output
    with torch.no_grad():
        for ours, theirs in ((split.model, whole.model), (split.ema.module, whole.ema.module)):
            torch.testing.assert_close(ours.eval()(z), theirs.eval()(z), rtol=0, atol=1e-6)
        x = images.float() / 127.5 - 1
        before = DinoDiscriminator(cfg.disc, 0, disc_state(cfg.disc)).eval()(x)
        a, b = split.disc.eval()(x), whole.disc.eval()(x)
    assert (b - before).abs().max() > 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


def test_random_crops_are_seeded_by_draw_and_stream_from_disk(tmp_path):
    from unirae_pipeline.data.images import scan_image_folder

    write_folder(tmp_path / "imgs", {"a": 6, "b": 6}, size=30)
    image_set = scan_image_folder(tmp_path / "imgs")
    crops = RandomCrops(image_set, "train", 16, 24, seed=3)
    (a,), (b,) = crops[(0, 7)], crops[(0, 7)]
    assert a.dtype == torch.uint8 and a.shape == (3, 16, 16) and torch.equal(a, b)
    assert any(not torch.equal(a, crops[(0, d)][0]) for d in range(8, 20))
    one = [x for _, (x,) in zip(range(4), KeyedBatches(crops, 4, seed=0, num_workers=0).loader())]
    two = [x for _, (x,) in zip(range(4), KeyedBatches(crops, 4, seed=0, num_workers=2).loader())]
    assert all(torch.equal(x, y) for x, y in zip(one, two)) and one[0].shape == (4, 3, 16, 16)
    resumed = KeyedBatches(crops, 4, seed=0)
    resumed.start = 2
    assert torch.equal(next(iter(resumed.loader()))[0], one[2])
    with pytest.raises(ValueError, match="train_rae.resize_ratio"):
        RandomCrops(image_set, "train", 16, 8, seed=0)
    assert np.unique(crops[(3, 1)][0].numpy()).size > 1
    # resize_ratio null: the cache's centre crops, whatever the draw
    centre, cached = CentreCrops(image_set, "train", 16), ImageDataset(image_set, "train", 16)
    assert all(torch.equal(centre[(row, draw)][0], cached[row][0]) for row, draw in ((0, 0), (0, 5), (3, 1)))


DDP_SCRIPT = '''
import json, os, sys
import torch
from safetensors.torch import save_file
from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder
from unirae_pipeline.config.build import build
from unirae_pipeline.training.data import TensorBatches
from unirae_pipeline.training.fit import TrainerConfig, fit
from unirae_pipeline.runtime import RuntimeConfig
from unirae_pipeline.training.rae import RAEModule, RAETrainConfig

cfg = build(RAETrainConfig, json.loads(sys.argv[1]), "train_rae")
g = torch.Generator().manual_seed(0)
z = torch.randn(64, 8, 4, 4, generator=g)
images = torch.randint(0, 256, (64, 3, 16, 16), generator=g, dtype=torch.uint8)
torch.manual_seed(0)
module = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.8, "uniform"), 8, 4), cfg)
trainer = TrainerConfig("cpu", 2, 1, "ddp", "32-true", 2)
run = RuntimeConfig(0, 1, 0, False, "cpu", ".cache", "logs")
curve = fit(module, TensorBatches((z, images), 4, seed=0), trainer, run, "stage1", seed=0)
state = {"decoder." + k: v for k, v in module.model.state_dict().items()}
state |= {"heads." + k: v for k, v in module.disc.heads.state_dict().items()}
state["disc"] = torch.tensor(curve["disc"].to_numpy())
save_file({k: v.contiguous() for k, v in state.items()}, f"rank{os.environ['RANK']}.safetensors")
'''


@pytest.mark.slow
def test_ddp_stage1_keeps_the_ranks_equal(weights, tmp_path):
    """Two CPU processes (gloo, torchrun), two accumulated micro-batches each, the adversarial term on: both
    backward passes of every step (generator, discriminator) are all-reduced, so both ranks end with the same
    decoder and heads though each saw its own data, latent noise and augmentations."""
    from safetensors.torch import load_file

    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    cfg = recipe(weights, lpips_weight=0.0, disc_upd_start=1, disc_start=2, duration=4)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "ddp.py", json.dumps(cfg)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert a["disc"][1:].isfinite().all()  # the discriminator stepped from step 1 on
    for key in a:
        if not key.endswith(("weight_u", "weight_v", "disc")):  # power-iteration vectors: each rank's own forwards
            assert torch.equal(a[key], b[key]), key


def test_the_adaptive_weight_under_accumulation_is_the_whole_batch_one(weights, tmp_path, monkeypatch):
    """With the adversarial term on, two accumulated micro-batches of 4 take the adaptive weight of the whole batch
    of 8, as the reference computes it on its unsplit per-GPU batch, and the generator step equals the unsplit one;
    each micro-batch's own weight differs. Without latent noise and DiffAug, whose draws depend on the split."""
    monkeypatch.chdir(tmp_path)  # Lightning's logs
    z, images = torch.randn(16, 8, 4, 4), torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    cfg = build(RAETrainConfig, recipe(weights, disc_upd_start=0, disc_start=0, duration=1, warmup=0,
                                       diffaug=False), "train_rae")
    runs = []
    for batch, accumulate in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        module = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.0, "uniform"), 8, 4), cfg)
        start = copy.deepcopy(module.model.state_dict())
        curve = fit(module, TensorBatches((z, images), batch, seed=0), TrainerConfig("cpu", 1, 1, "auto", "32-true",
                                                                                     accumulate),
                    runtime(log_every_n_steps=1), "stage1", 0)
        runs.append((module, curve))
    (whole, curve), (split, accumulated) = runs
    weight = float(curve["gan_weight"].iloc[0])
    assert float(accumulated["gan_weight"].iloc[0]) == pytest.approx(weight, rel=1e-5)
    probe = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.0, "uniform"), 8, 4), cfg)
    probe.model.load_state_dict(start)
    with torch.no_grad():  # by what they compute: AdamW steps round-off gradients (the key bias) by up to the LR
        ours, theirs, before = (m.eval()(z) for m in (split.model, whole.model, copy.deepcopy(probe.model)))
    assert (theirs - before).abs().max() > 1e-3  # the step moved the decoder's output, the same way to 1%
    assert float((ours - theirs).norm()) < 1e-2 * float((theirs - before).norm())
    order = next(idx for idx, _ in batch_indices(16, 8, 0, 0))  # the batch both runs trained on
    micro = [float(probe.generator_loss(z[rows], images[rows].float() / 255)["gan_weight"]) for rows in
             (order[:4], order[4:])]
    assert all(abs(m / weight - 1) > 1e-3 for m in micro), (micro, weight)


def test_rescaled_rope_reaches_the_generator_and_not_the_discriminator(weights, p, tmp_path, monkeypatch):
    """`train_rae.encoder_rope_rescale` (RAEv2's stage 1): each generator step encodes with the DINOv3 encoder's
    train-mode RoPE, each discriminator step's fakes decode its eval-mode latents (RAEv2's engine puts the whole RAE
    in eval mode for them). Refused without source: images, below 1, or with an encoder without DINOv3's RoPE."""
    from unirae_pipeline.config.params import load_params
    from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder

    monkeypatch.chdir(tmp_path)  # Lightning's logs
    encoder = FrozenEncoder(EncoderConfig("vit_base_patch16_dinov3_qkvb.lvd1689m", "none", 16,
                                          {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}), 0,
                            rope_rescale=2.0)
    gen = torch.Generator().manual_seed(0)
    for param in encoder.parameters():  # DINOv3's init scales its blocks by 1e-5, where the RoPE hardly shows
        param.normal_(0, 0.3, generator=gen)
    calls: list[bool] = []
    encoder.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs.get("rescale_rope", False)),
                                      with_kwargs=True)
    cfg = build(RAETrainConfig, recipe(weights, source="images", encoder_rope_rescale=2.0, lpips_weight=0.0,
                                       disc_upd_start=2, disc_start=3, duration=4), "train_rae")
    torch.manual_seed(0)
    module = RAEModule(ViTDecoder(DecoderConfig(32, 1, 2, 64, 4, 0.0, "uniform"), 32, 4), cfg, encoder)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    fit(module, TensorBatches((images,), 8, seed=0), _trainer(), runtime(log_every_n_steps=1), "stage1", 0)
    assert calls == [True, True, True, False, True, False]  # generator steps; the discriminator's from step 2
    x = images[:4].float() / 255
    torch.manual_seed(1)
    rescaled = encoder(x, rescale_rope=True)
    assert (rescaled - encoder(x)).abs().max() > 1e-2
    torch.manual_seed(1)
    assert torch.equal(module._inputs((images[:4],))[0], rescaled)
    for over, match in (({"source": "latents"}, "with source 'latents'"), ({"source": "images",
                                                                             "encoder_rope_rescale": 0.5}, ">= 1")):
        with pytest.raises(ValueError, match=match):
            build(RAETrainConfig, recipe(weights, **{"encoder_rope_rescale": 2.0, **over}), "train_rae")
    p["train_rae"].update(source="images", encoder_rope_rescale=2.0)
    with pytest.raises(ValueError, match="rescales DINOv3's RoPE; encoder.model"):
        load_params(p)
