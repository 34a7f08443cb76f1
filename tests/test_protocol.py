"""Protocol parity with the reference code (bytetriper/RAE@a4d18c4), beyond the modules: LR schedules, epochs, the
flow-matching loss and training times, guided Euler/Heun sampling, latent normalization with the released statistics'
layout, the uint8 export, PSNR/SSIM, stage 1's pieces and training steps, and the paper profiles' values against the
reference configs.

Every expected value was produced by running the reference code (tests/fixtures/make_official_fixtures.py) and is
committed; nothing here re-derives it from our code.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from unirae_pipeline.compose import compose_params
from unirae_pipeline.data.latents import denormalize, norm_stats, normalize
from unirae_pipeline.diffusion.sampling import SamplerConfig, integrate, time_grid
from unirae_pipeline.diffusion.transport import TransportConfig, draw_noise_and_time, shift_factor
from unirae_pipeline.evaluation.fd import psnr_ssim
from unirae_pipeline.evaluation.report import to_uint8_nhwc
from unirae_pipeline.models.official import load_official_decoder, load_official_dit, load_official_stats
from unirae_pipeline.params import build
from unirae_pipeline.training.fit import TrainerConfig, steps_per_epoch
from unirae_pipeline.training.objectives import dit_objective
from unirae_pipeline.training.optim import DiTTrainConfig, build_optimizer
from unirae_pipeline.training.stage1 import RAETrainConfig

from .conftest import ROOT, runtime
from .test_official import read_fixture

FIXTURES = ROOT / "tests" / "fixtures"
TIME_DISTS = {"uniform": "uniform", "logit-normal_0_1": "logit_normal"}  # reference name -> ours


@pytest.fixture(scope="module")
def ref() -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(FIXTURES / "official_protocol.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, {k: json.loads(v) for k, v in f.metadata().items()
                                                        if k != "source"}


@pytest.fixture(scope="module")
def configs() -> dict:
    return json.loads((FIXTURES / "official_configs.json").read_text())["configs"]


@pytest.fixture(scope="module")
def imagenet() -> dict:
    return compose_params(["profile=imagenet"], conf_dir=ROOT / "conf")


def _lrs(cfg, steps: int, delayed: bool = False) -> torch.Tensor:
    """The LR of each parameter group at every optimizer step, from our optimizer and scheduler themselves."""
    heads = [torch.nn.Parameter(torch.zeros(1))] if delayed else []
    delay = int(cfg.disc_upd_start) if delayed else 0  # stage 1: the discriminator's schedule starts there
    opt, sched = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))], heads, delay)
    values = []
    for _ in range(steps):
        values.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return torch.tensor(values, dtype=torch.float64)


def test_lr_schedules_of_both_paper_recipes_equal_the_reference(ref, imagenet):
    tensors, meta = ref
    spe = meta["spe"]
    dit = build(DiTTrainConfig, {**imagenet["train_dit"], "duration": 810}, "train_dit").in_steps(spe["stage2"])
    assert torch.allclose(_lrs(dit, 810 * spe["stage2"])[:, 0], tensors["lr.stage2"], rtol=1e-12, atol=0)
    weightless = {"lpips_weight": 0.0, "gan_weight": 0.0}  # the schedule needs no LPIPS/DINO weight files
    rae = build(RAETrainConfig, {**imagenet["train_rae"], **weightless}, "train_rae").in_steps(spe["stage1"])
    ours = _lrs(rae, rae.steps, delayed=True)  # the paper's 16 epochs; the reference's stays at final_lr after
    assert torch.allclose(ours[:, 0], tensors["lr.stage1"][: rae.steps], rtol=1e-12, atol=0)
    assert torch.allclose(ours[:, 1], tensors["lr.stage1_disc"][: rae.steps], rtol=1e-12, atol=0)


def test_optimizer_steps_per_epoch_equal_the_reference(ref):
    """The reference's DistributedSampler pads an epoch to a multiple of the GPUs: one more step than ours only when
    the last global batch lacks fewer images than there are GPUs (the last case); never on ImageNet's recipes."""
    tensors, meta = ref
    ours = []
    for n, global_batch, world, accum in meta["epochs"]:
        trainer = TrainerConfig("gpu", world, 1, "ddp", "32-true", accum)
        ours.append(steps_per_epoch(n, global_batch // (world * accum), trainer))
    expected = tensors["epochs.steps"].tolist()
    assert ours[:-1] == expected[:-1] and expected[:3] == [1251, 2502, 1251]
    assert ours[-1] == expected[-1] - 1


@pytest.mark.parametrize("dist", sorted(TIME_DISTS))
def test_flow_matching_loss_and_training_times_equal_the_reference(ref, dist):
    """For the same seed: the same noise, times and label dropout, hence the same loss on the official DiT-DH."""
    tensors, meta = ref
    _, official_meta, dit_state, _ = read_fixture()
    model = load_official_dit(dit_state, **official_meta["dit"]).train()
    transport = TransportConfig(TIME_DISTS[dist], meta["shift_base"], 0.0, 1.0, "mean_var")
    shift = shift_factor(tuple(tensors["fm.x"].shape[1:]), transport.shift_base)
    torch.manual_seed(1)
    with torch.no_grad():
        loss = dit_objective(model, (tensors["fm.x"], tensors["fm.y"]), transport=transport, shift=shift)
    assert float(loss) == pytest.approx(float(tensors[f"fm.{dist}.loss"].mean()), rel=1e-5)
    torch.manual_seed(2)
    _, t = draw_noise_and_time(transport, torch.zeros(4096, 1), shift)
    assert torch.allclose(t, tensors[f"fm.{dist}.t"], atol=1e-6, rtol=0)


def test_euler_and_heun_with_cfg_interval_and_autoguidance_equal_the_reference(ref):
    tensors, meta = ref
    _, official_meta, dit_state, _ = read_fixture()
    model = load_official_dit(dit_state, **official_meta["dit"])
    guide = load_official_dit({k[6:]: v for k, v in tensors.items() if k.startswith("guide.")}, **meta["dit"])
    z, y = tensors["sample.z"], tensors["sample.y"]
    shift = shift_factor(tuple(z.shape[1:]), meta["shift_base"])
    methods = {"euler": "euler", "heun2": "heun"}
    for name, (method, num_steps, guidance, scale, (t_min, t_max)) in meta["samplers"].items():
        sampler = SamplerConfig(methods[method], num_steps, guidance, scale, t_min, t_max, 1.0)
        velocity = sampler.velocity(model, model.num_classes, guide)
        with torch.no_grad():
            out = integrate(velocity, z, y, time_grid(num_steps, shift).float(), sampler)
        expected = tensors[f"sample.{name}"]
        assert float((out - expected).abs().max() / expected.abs().max()) < 1e-5, name


def test_latent_normalization_with_the_released_variance_only_statistics(ref, tmp_path):
    """A stat.pt holding only `var` (the released DINOv2-B statistics): `latent_norm: var` (and, with no mean to
    subtract, `mean_var` too) normalizes as the reference's RAE.encode, and the decoder inverts it as RAE.decode."""
    tensors, _ = ref
    _, official_meta, _, decoder_state = read_fixture()
    torch.save({"var": tensors["norm.var"]}, tmp_path / "stat.pt")
    stats = load_official_stats(torch.load(tmp_path / "stat.pt", weights_only=True))
    tokens = tensors["norm.tokens"]
    raw = tokens.transpose(1, 2).reshape(len(tokens), -1, 4, 4)
    decoder = load_official_decoder(decoder_state, **official_meta["decoder"])
    for mode in ("var", "mean_var"):
        mean, var = norm_stats(stats, mode)
        encoded = normalize(raw, mean, var)
        assert torch.allclose(encoded, tensors["norm.encoded"], atol=1e-6, rtol=1e-6)
        with torch.no_grad():
            decoded = decoder(denormalize(encoded, mean, var))
        assert float((decoded - tensors["norm.decoded"]).abs().max()) < 1e-5
    with_mean = {**stats, "mean": torch.full_like(stats["var"], 0.5)}
    assert torch.equal(normalize(raw, *norm_stats(with_mean, "var")), normalize(raw, *norm_stats(stats, "var")))
    assert not torch.allclose(normalize(raw, *norm_stats(with_mean, "mean_var")), tensors["norm.encoded"])


def test_uint8_export_and_psnr_ssim_equal_the_reference(ref):
    tensors, _ = ref
    assert torch.equal(torch.from_numpy(to_uint8_nhwc(tensors["export.in"])), tensors["export.out"])
    scores = psnr_ssim(tensors["iqa.b"].permute(0, 3, 1, 2), tensors["iqa.a"].permute(0, 3, 1, 2))
    assert scores["psnr"] == pytest.approx(float(tensors["iqa.psnr"]), rel=1e-6)
    assert scores["ssim"] == pytest.approx(float(tensors["iqa.ssim"]), rel=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        psnr_ssim(tensors["export.in"], tensors["export.in"])


def _global_batch(params: dict, stage: str) -> int:
    trainer = params["trainer"]
    return params[stage]["batch_size"] * trainer["devices"] * trainer["num_nodes"] * trainer["accumulate_grad_batches"]


def test_profile_imagenet_equals_the_reference_configs(imagenet, configs):
    """profile=imagenet (with train_rae=paper and train_dit=paper) against the reference's YAML configs."""
    stage1 = configs["configs/stage1/training/DINOv2-B_decXL.yaml"]
    s1, gan = stage1["training"], stage1["gan"]
    rae = imagenet["train_rae"]
    assert _global_batch(imagenet, "train_rae") == s1["global_batch_size"] and rae["duration"] == s1["epochs"]
    assert (rae["unit"], rae["lr"], list(rae["betas"]), rae["weight_decay"]) == (
        "epochs", s1["optimizer"]["lr"], s1["optimizer"]["betas"], s1["optimizer"]["weight_decay"])
    sched = s1["scheduler"]
    assert sched["warmup_from_zero"] and (rae["schedule"], rae["warmup"], rae["final_lr"]) == (
        sched["type"], sched["warmup_epochs"], sched["final_lr"])
    assert rae["decay_end"] in (None, sched["decay_end_epoch"]) and sched["decay_end_epoch"] == s1["epochs"]
    assert (rae["ema_decay"], rae["grad_clip"]) == (s1["ema_decay"], s1["clip_grad"])
    loss = gan["loss"]
    assert (rae["lpips_weight"], rae["gan_weight"], rae["lpips_start"], rae["disc_start"], rae["disc_upd_start"],
            rae["max_d_weight"]) == (loss["perceptual_weight"], loss["disc_weight"], loss["lpips_start"],
                                     loss["disc_start"], loss["disc_upd_start"], loss["max_d_weight"])
    assert gan["disc"]["scheduler"] == sched and gan["disc"]["optimizer"] == s1["optimizer"]
    assert rae["disc"]["kernel_size"] == gan["disc"]["arch"]["ks"] and gan["disc"]["augment"]["cutout"] == 0
    assert imagenet["decoder"]["noise_tau"] == stage1["stage_1"]["params"]["noise_tau"]
    assert imagenet["encoder"]["input_size"] == stage1["stage_1"]["params"]["encoder_input_size"]

    stage2 = configs["configs/stage2/training/ImageNet256/DiTDH-XL_DINOv2-B.yaml"]
    s2, dit = stage2["training"], imagenet["train_dit"]
    assert _global_batch(imagenet, "train_dit") == s2["global_batch_size"]
    assert (dit["lr"], list(dit["betas"]), dit["weight_decay"]) == (
        s2["optimizer"]["lr"], s2["optimizer"]["betas"], s2["optimizer"]["weight_decay"])
    sched = s2["scheduler"]
    assert not sched["warmup_from_zero"] and dit["warmup"] == 0  # the reference's "warm-up" holds the LR constant
    assert (dit["schedule"], dit["decay_start"], dit["decay_end"], dit["final_lr"]) == (
        sched["type"], sched["warmup_epochs"], sched["decay_end_epoch"], sched["final_lr"])
    assert (dit["ema_decay"], dit["grad_clip"]) == (s2["ema_decay"], s2["clip_grad"])
    arch = stage2["stage_2"]["params"]
    ours = imagenet["dit"]
    assert [ours["hidden_size"], ours["head_hidden_size"]] == arch["hidden_size"]
    assert [ours["depth"], ours["head_depth"]] == arch["depth"]
    assert [ours["num_heads"], ours["head_num_heads"]] == arch["num_heads"]
    assert (ours["mlp_ratio"], ours["class_dropout_prob"]) == (arch["mlp_ratio"], arch["class_dropout_prob"])
    transport, diffusion = stage2["transport"]["params"], imagenet["diffusion"]
    name, mu, sigma = transport["time_dist_type"].split("_")
    assert (name, float(mu), float(sigma)) == ("logit-normal", diffusion["logit_mean"], diffusion["logit_std"])
    assert diffusion["time_dist"] == TIME_DISTS[transport["time_dist_type"]]
    assert diffusion["shift_base"] == stage2["misc"]["time_dist_shift_base"]
    assert diffusion["latent_norm"] == "var"  # its statistics (`normalization_stat_path`) hold no mean
    assert imagenet["trainer"]["precision"] in ("32", "32-true")  # fp32 (TF32 matmuls), as its README recommends

    sampling = configs["configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B.yaml"]
    sampler, guidance = imagenet["sample"]["sampler"], sampling["guidance"]
    assert sampling["sampler"]["mode"] == "ODE"
    assert (sampler["method"], sampler["num_steps"]) == (sampling["sampler"]["params"]["sampling_method"],
                                                          sampling["sampler"]["params"]["num_steps"])
    assert (sampler["guidance"], sampler["guidance_scale"], sampler["guidance_t_min"], sampler["guidance_t_max"]) == (
        guidance["method"], guidance["scale"], guidance["t-min"], guidance["t-max"])


def test_the_autoguidance_guide_is_the_reference_dit_dh_s(configs):
    """The 1.13 setting: AutoGuidance at w = 1.42 over the whole trajectory with a DiT-DH-S guide (`dit=S`), trained
    by the same recipe as `configs/stage2/training/ImageNet256/DiTDH-S_DINOv2-B.yaml`."""
    ag = configs["configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B_AG.yaml"]["guidance"]
    small = compose_params(["dit=S"], conf_dir=ROOT / "conf")["dit"]
    arch = ag["guidance_model"]["params"]
    assert ([small["hidden_size"], small["head_hidden_size"]], [small["depth"], small["head_depth"]],
            [small["num_heads"], small["head_num_heads"]]) == (arch["hidden_size"], arch["depth"], arch["num_heads"])
    assert (ag["method"], ag["scale"], ag["t-min"], ag["t-max"]) == ("autoguidance", 1.42, 0.0, 1.0)
    recipes = [configs[f"configs/stage2/training/ImageNet256/DiTDH-{size}_DINOv2-B.yaml"]["training"]
               for size in ("XL", "S")]
    assert {k: v for k, v in recipes[0].items() if k != "sample_every"} == {
        k: v for k, v in recipes[1].items() if k != "sample_every"}


def test_profile_imagenet512_equals_the_reference_512_configs(imagenet, configs):
    """profile=imagenet512 against the reference's ImageNet-512 sampling config (the source of its shapes; the 512
    training YAML still declares 16x16 latents) and DINOv2-B_512 stage-1 config: the 256 profile's recipes at the same
    global batches, with the 512 encoder, shapes, time shift, guide and guidance."""
    from unirae_pipeline.config import load_params
    from unirae_pipeline.diffusion.transport import shift_factor

    p512 = compose_params(["profile=imagenet512"], conf_dir=ROOT / "conf")
    tree = load_params(p512)
    sampling = configs["configs/stage2/sampling/ImageNet512/DiTDH-XL_DINOv2-B_decXL_AG.yaml"]
    stage1 = configs["configs/stage1/pretrained/DINOv2-B_512.yaml"]["stage_1"]["params"]
    main, guide = sampling["stage_2"]["params"], sampling["guidance"]["guidance_model"]["params"]
    c, h, w = sampling["misc"]["latent_size"]
    assert tree.encoder.latent_shape == (c, h, w) == (main["in_channels"], main["input_size"], main["input_size"])
    assert tree.encoder.input_size == stage1["encoder_input_size"] == 448 and tree.data.image_size == 512
    assert tree.encoder.model == imagenet["encoder"]["model"] and stage1["encoder_params"]["normalize"]
    assert tree.decoder.patch_size * h == tree.data.image_size  # the reference's decoder_patch_size default, 16
    assert shift_factor((c, h, w), p512["diffusion"]["shift_base"]) == math.sqrt(
        sampling["misc"]["time_dist_shift_dim"] / sampling["misc"]["time_dist_shift_base"])
    for ours, theirs in ((tree.dit, main), (tree.guide.dit, guide)):
        assert ([ours.hidden_size, ours.head_hidden_size], [ours.depth, ours.head_depth],
                [ours.num_heads, ours.head_num_heads]) == (theirs["hidden_size"], theirs["depth"], theirs["num_heads"])
    sampler = tree.sample.sampler
    assert (sampler.method, sampler.num_steps) == (sampling["sampler"]["params"]["sampling_method"],
                                                   sampling["sampler"]["params"]["num_steps"])
    assert (sampler.guidance, sampler.guidance_scale, sampler.guidance_t_min, sampler.guidance_t_max) == (
        sampling["guidance"]["method"], sampling["guidance"]["scale"], sampling["guidance"]["t-min"],
        sampling["guidance"]["t-max"])
    assert (tree.train_dit.duration, tree.guide.source, tree.guide.duration) == (400, "train", 20)  # DiTDH-XL_ep400,
    # DiTDH-S_ep20 in the sampling config's checkpoint paths
    assert "ep400" in sampling["stage_2"]["ckpt"] and "ep20" in sampling["guidance"]["guidance_model"]["ckpt"]
    for stage in ("train_rae", "train_dit"):  # the same recipes and global batches as at 256 px
        assert _global_batch(p512, stage) == _global_batch(imagenet, stage)
        assert {k: v for k, v in p512[stage].items() if k not in ("batch_size", "duration")} == {
            k: v for k, v in imagenet[stage].items() if k not in ("batch_size", "duration")}
    assert p512["diffusion"] == imagenet["diffusion"] and p512["fid"]["reference_npz"].endswith("imagenet512.npz")


def test_stage1_diffaug_hinge_loss_and_adaptive_weight_equal_the_reference(ref):
    """DiffAug draws the reference's random numbers in its order (same seed, same augmentations)."""
    from unirae_pipeline.training.stage1 import adaptive_weight, diff_augment, hinge_d_loss

    tensors, _ = ref
    torch.manual_seed(5)
    assert torch.allclose(diff_augment(tensors["diffaug.in"]), tensors["diffaug.out"], atol=1e-6, rtol=0)
    assert float(hinge_d_loss(tensors["gan.real"], tensors["gan.fake"])) == pytest.approx(
        float(tensors["gan.d_hinge"]), rel=1e-6)
    layer = torch.nn.Parameter(tensors["adaptive.layer"].clone())
    pred = tensors["adaptive.z"] @ layer.T
    rec = (pred - tensors["adaptive.target"]).abs().mean() + 0.3 * pred.pow(2).mean()
    gan = -(pred * tensors["adaptive.probe"]).mean()
    assert float(adaptive_weight(rec, gan, layer, 1e4)) == pytest.approx(float(tensors["adaptive.weight"]), rel=1e-6)
    assert float(adaptive_weight(rec, gan, layer, 0.01)) == pytest.approx(float(tensors["adaptive.clamped"]))


def test_dino_discriminator_equals_the_reference(ref, tmp_path):
    """The reference's DinoDisc (a narrowed S/8 recipe) and ours on the same DINO file and head weights: the same
    logits in eval mode and after the training forward's power iteration; its head states load as they are."""
    from unirae_pipeline.models.discriminator import DinoDiscriminator, DiscConfig

    tensors, meta = ref
    spec = meta["disc"]
    torch.save({k[len("disc.backbone."):]: v for k, v in tensors.items() if k.startswith("disc.backbone.")},
               tmp_path / "dino.pth")
    cfg = DiscConfig("vit_small_patch8_224", str(tmp_path / "dino.pth"), 224, tuple(spec["key_depths"]), spec["ks"],
                     {k: spec[k] for k in ("embed_dim", "num_heads", "depth")})
    disc = DinoDiscriminator(cfg)
    disc.heads.load_state_dict({k[len("disc.heads."):]: v for k, v in tensors.items() if k.startswith("disc.heads.")})
    x = tensors["disc.x"]
    with torch.no_grad():
        for mode in ("eval", "train"):
            out = getattr(disc, mode)()(x)
            expected = tensors[f"disc.{mode}"]
            assert float((out - expected).abs().max() / expected.abs().max()) < 1e-5, mode


def test_stage1_training_steps_equal_the_reference(ref, tmp_path, monkeypatch):
    """Six stage-1 steps from the reference's weights, batches and seed: the same loss terms at every step (L1, GAN
    term, adaptive weight, discriminator hinge) and the same decoder, EMA and discriminator heads at the end. The
    reference's order holds: generator step, EMA, then the discriminator step on the decoding by the just-updated
    decoder, its schedule starting at `disc_upd_start`."""
    import lightning as L
    from torch.utils.data import DataLoader

    from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder
    from unirae_pipeline.models.discriminator import DinoDiscriminator
    from unirae_pipeline.training.fit import fit
    from unirae_pipeline.training.stage1 import RAEModule

    tensors, meta = ref
    k, spec, dec = meta["steps"], meta["disc"], read_fixture()[1]["decoder"]
    part = lambda prefix: {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}  # noqa: E731
    torch.save(part("disc.backbone."), tmp_path / "dino.pth")
    cfg = build(RAETrainConfig, dict(
        unit="epochs", duration=k["epochs"], batch_size=k["batch"], lr=k["lr"], final_lr=k["final_lr"],
        betas=k["betas"], weight_decay=k["weight_decay"], warmup=1, schedule="cosine", decay_start=None,
        decay_end=None, ema_decay=k["ema_decay"], grad_clip=k["clip_grad"], source="latents", resize=16,
        lpips_weight=0.0, lpips_start=0, gan_weight=k["disc_weight"], disc_start=k["disc_start"],
        disc_upd_start=k["disc_upd_start"], max_d_weight=k["max_d_weight"], diffaug=True,
        lpips={"vgg_weights": None, "heads_weights": None},
        disc={"model": "vit_small_patch8_224", "weights": str(tmp_path / "dino.pth"), "input_size": 224,
              "key_depths": spec["key_depths"], "kernel_size": spec["ks"],
              "overrides": {n: spec[n] for n in ("embed_dim", "num_heads", "depth")}}),
        "train_rae").in_steps(k["steps_per_epoch"])

    def decoder(state: dict[str, torch.Tensor]) -> ViTDecoder:
        return load_official_decoder(state, **dec)

    model = ViTDecoder(DecoderConfig(dec["hidden_size"], dec["depth"], dec["num_heads"], dec["mlp_dim"],
                                     dec["patch_size"], k["noise_tau"], "uniform"), dec["latent_dim"], 4)
    model.load_state_dict(decoder(part("steps.decoder0.")).state_dict())
    module = RAEModule(model, cfg)
    module.disc.heads.load_state_dict(part("steps.heads0."))

    class InOrder:
        """The reference's batches in its order, one per step."""

        batch_size, num_samples, start = k["batch"], k["batch"] * k["steps_per_epoch"], 0

        def loader(self) -> DataLoader:
            return DataLoader(list(zip(tensors["steps.latents"], tensors["steps.images"])), batch_size=None)

    class Reseed(L.Callback):
        """The reference seeds right before its loop; Lightning draws from the generator in between."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 0:
                torch.manual_seed(k["seed"])

    class First(L.Callback):
        """The parameters after the first step that trains both the decoder and the discriminator."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == cfg.disc_upd_start + 1:
                self.decoder = {n: v.clone() for n, v in pl_module.model.state_dict().items()}
                self.heads = {n: v.clone() for n, v in pl_module.disc.heads.state_dict().items()}

    first = First()
    monkeypatch.chdir(tmp_path)  # Lightning's logs
    curve = fit(module, InOrder(), TrainerConfig("cpu", 1, 1, "auto", "32-true", 1), runtime(log_every_n_steps=1),
                "steps", 0,
                callbacks=(Reseed(), first))
    assert curve["step"].tolist() == list(range(1, cfg.steps + 1))  # a row after each step: that step's terms

    def close(ours: torch.Tensor, theirs: torch.Tensor, name: str, rtol: float, atol: float) -> None:
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{name}: {ours.tolist() if ours.numel() < 9 else ''} {m}")

    # One generator step and one discriminator step: the reference's parameters to 1e-5, every one whose gradient is
    # not round-off. The head convolutions' biases before their per-sample norm have no gradient (the norm removes
    # them), so AdamW moves them by +-LR on round-off, in the reference as here; they change no output.
    expected = decoder(part("steps.first.decoder.")).state_dict()
    for name, value in first.decoder.items():
        close(value, expected[name], name, 1e-5, 1e-6)
    grads, expected = part("steps.first.heads_grad."), part("steps.first.heads.")
    for name, value in first.heads.items():
        if name.endswith(("0.0.bias", "fn.0.bias")):
            assert grads[name].abs().max() < 1e-7, name  # the biases before the norm: no gradient but round-off
            continue
        real = grads[name].abs() > 1e-6 if name in grads else torch.ones_like(value, dtype=torch.bool)  # u, v: all
        assert real.float().mean() > 0.98, name
        close(value[real], expected[name][real], name, 1e-5, 1e-5)  # the step moved them by ~5e-4 (LR)

    # Over six steps, not bit-equal, and not meant to be: AdamW moves every weight by about the LR whatever the size
    # of its gradient, so a gradient that is round-off (the pre-norm biases, a few weights) takes a step of random
    # sign, and those weights drift with any change of summation order. The reference itself, run on 1 and on 2 CPU
    # threads, differs by 5e-6 in `gan` and `disc`, 3e-3 (relative) in `gan_weight`, 1.2e-5 in the decoder and 2e-3
    # in the final logits (measured); the tolerances sit above that noise and below the ~1e-3 by which `gan` and
    # `disc` move when the discriminator steps on the decoder as it was before the update.
    for name in ("l1", "gan", "disc"):
        close(torch.tensor(curve[name].to_numpy(), dtype=torch.float32), tensors[f"steps.{name}"], name, 1e-4, 1e-6)
    close(torch.tensor(curve["gan_weight"].to_numpy(), dtype=torch.float32), tensors["steps.gan_weight"],
          "gan_weight", 1e-2, 0)  # a ratio of gradient norms through those heads
    for ours, theirs in ((module.model, decoder(part("steps.decoder."))),
                         (module.ema.module, decoder(part("steps.ema.")))):
        theirs = theirs.state_dict()
        for name, value in ours.state_dict().items():
            close(value, theirs[name], name, 0, 5e-5)
    reference, start = DinoDiscriminator(cfg.disc), DinoDiscriminator(cfg.disc)
    reference.heads.load_state_dict(part("steps.heads."))
    start.heads.load_state_dict(part("steps.heads0."))
    with torch.no_grad():
        logits, expected, before = (d.eval()(tensors["disc.x"]) for d in (module.disc, reference, start))
    close(logits, expected, "discriminator logits", 0, 1e-2)
    assert float((expected - before).abs().max()) > 10  # the heads have learned


def test_the_released_rae_table_is_the_reference_pretrained_configs(configs):
    """Each of the reference's `configs/stage1/pretrained/*.yaml`: the README's row names its decoder and statistics
    files, and our preset encodes at its input size, with its image processor's normalization where we know it."""
    readme = (ROOT / "README.md").read_text()
    presets = {"DINOv2-B": "dinov2_b", "DINOv2-B_512": "dinov2_b_512", "SigLIP2": "siglip2_b", "MAE": "mae_b"}
    for name, preset in presets.items():
        ref = configs[f"configs/stage1/pretrained/{name}.yaml"]["stage_1"]["params"]
        row = next(line for line in readme.splitlines() if line.startswith("| ") and f"`{preset}`" in line
                   and "model.pt" in line)
        for key in ("pretrained_decoder_path", "normalization_stat_path"):
            assert ref[key].removeprefix("models/") in row, (name, key)
        ours = compose_params([f"encoder={preset}"], conf_dir=ROOT / "conf")["encoder"]
        assert ours["input_size"] == ref["encoder_input_size"], name
        assert ref["decoder_config_path"] == "configs/decoder/ViTXL" and ref["noise_tau"] == 0.0
