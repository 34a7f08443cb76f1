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

from unirae_pipeline.config.build import build
from unirae_pipeline.config.params import load_params
from unirae_pipeline.data.normalization import denormalize, norm_stats, normalize
from unirae_pipeline.diffusion.sampler_config import SamplerConfig
from unirae_pipeline.diffusion.sampling import integrate, time_grid, with_guidance
from unirae_pipeline.diffusion.transport import TransportConfig, draw_noise_and_time, shift_factor
from unirae_pipeline.evaluation.fd import psnr_ssim
from unirae_pipeline.evaluation.report import to_uint8_nhwc
from unirae_pipeline.interop.loss_weights import disc_state
from unirae_pipeline.interop.official import load_official_decoder, load_official_dit, load_official_stats
from unirae_pipeline.tools.compose import compose_params
from unirae_pipeline.training.fit import TrainerConfig, steps_per_epoch
from unirae_pipeline.training.objectives import dit_objective
from unirae_pipeline.training.optim import DiTTrainConfig, build_optimizer
from unirae_pipeline.training.rae import RAETrainConfig

from .conftest import ROOT, documentation, runtime
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
def code_values() -> dict:
    """Values the reference's code holds instead of a config, as its own statements compute them."""
    return json.loads((FIXTURES / "official_configs.json").read_text())["code"]


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
        sampler = SamplerConfig(methods[method], num_steps, guidance, scale, t_min, t_max, 1.0, 1.0, 0.0, 1.0)
        velocity = with_guidance(sampler, model, model.num_classes, guide)
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


@pytest.mark.parametrize("profile", ["imagenet", "imagenet512"])
def test_stage1_crops_are_resized_as_the_reference_code_resizes(profile, code_values):
    """The shorter side before stage 1's random crop: `train_stage1.py`'s own statement (384 at 256 px, 768 at
    512), not a config value."""
    tree = load_params(compose_params([f"profile={profile}"], conf_dir=ROOT / "conf"))
    size = tree.data.image_size
    assert int(tree.train_rae.resize_ratio * size) == code_values["train_stage1.first_crop_size"][str(size)]


def test_profile_imagenet512_equals_the_reference_512_configs(imagenet, configs):
    """profile=imagenet512 against the reference's ImageNet-512 sampling config (the source of its shapes; the 512
    training YAML still declares 16x16 latents) and DINOv2-B_512 stage-1 config: the 256 profile's recipes at the same
    global batches, with the 512 encoder, shapes, time shift, guide and guidance."""
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
    from unirae_pipeline.training.rae import adaptive_weight, diff_augment, hinge_d_loss

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
    disc = DinoDiscriminator(cfg, 0, disc_state(cfg))
    disc.heads.load_state_dict({k[len("disc.heads."):]: v for k, v in tensors.items() if k.startswith("disc.heads.")})
    x = tensors["disc.x"]
    with torch.no_grad():
        for mode in ("eval", "train"):
            out = getattr(disc, mode)()(x)
            expected = tensors[f"disc.{mode}"]
            assert float((out - expected).abs().max() / expected.abs().max()) < 1e-5, mode


def _stage1_replay(ref, tmp_path, module_class) -> dict[str, list[float]]:
    """Each of the reference's six stage-1 steps run by our `module_class` (an `RAEModule`) from the reference's own
    state at that step: before step i the decoder, EMA, discriminator heads (with their power-iteration vectors),
    both optimizers' moments and the random generator are set to what the reference held, so no error compounds.
    Returns, per step, the worst ratio of our difference to its tolerance for every loss term and state part: a
    ratio above 1 is a departure. Tolerances are float32 rounding of one step (1e-5 relative, 1e-6 absolute), except
    for elements whose reference gradient is under 1e-3 of its tensor's RMS: AdamW moves those by up to the LR
    whatever their size, so their step's sign is round-off (the heads' biases before a norm have no gradient), and
    for the adaptive weight (see `given_weight`)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from unirae_pipeline.interop.official import official_decoder_state
    from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder
    from unirae_pipeline.training import rae as stage1_module
    from unirae_pipeline.training.fit import fit
    from unirae_pipeline.training.rae import adaptive_weight

    tensors, meta = ref
    k = meta["steps"]
    dec, spec = k["decoder"], k["disc"]
    part = lambda prefix: {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}  # noqa: E731
    ours_names = lambda state: official_decoder_state(state, dec["depth"])  # noqa: E731 - reference -> our names
    torch.save(part("steps.backbone."), tmp_path / "dino.pth")
    cfg = build(RAETrainConfig, dict(
        unit="epochs", duration=k["epochs"], batch_size=k["batch"], lr=k["lr"], final_lr=k["final_lr"],
        betas=k["betas"], weight_decay=k["weight_decay"], warmup=1, schedule="cosine", decay_start=None,
        decay_end=None, ema_decay=k["ema_decay"], grad_clip=k["clip_grad"], fit_batch=False, source="latents",
        resize_ratio=1.0, encoder_rope_rescale=None,
        lpips_weight=0.0, lpips_start=0, gan_weight=k["disc_weight"], disc_start=k["disc_start"],
        disc_upd_start=k["disc_upd_start"], max_d_weight=k["max_d_weight"], diffaug=True, train_tables=True,
        tf32=False, lpips={"vgg_weights": None, "heads_weights": None},
        disc={"model": "vit_small_patch8_224", "weights": str(tmp_path / "dino.pth"), "input_size": 224,
              "key_depths": spec["key_depths"], "kernel_size": spec["ks"],
              "overrides": {n: spec[n] for n in ("embed_dim", "num_heads", "depth")}}),
        "train_rae").in_steps(k["steps_per_epoch"])
    model = ViTDecoder(DecoderConfig(dec["hidden_size"], dec["depth"], dec["num_heads"], dec["mlp_dim"],
                                     dec["patch_size"], k["noise_tau"], "uniform"), dec["latent_dim"], 4)
    module = module_class(model, cfg)
    errors: dict[str, list[float]] = {}

    def worst(name: str, ours: torch.Tensor, theirs: torch.Tensor, slack: torch.Tensor | float = 0.0) -> None:
        tolerance = 1e-6 + 1e-5 * theirs.abs() + slack
        errors.setdefault(name, []).append(float(((ours - theirs).abs() / tolerance).max()))

    def slack(grads: dict[str, torch.Tensor], name: str, lr: float, like: torch.Tensor) -> torch.Tensor | float:
        """Where the reference's gradient is round-off (under 1e-3 of the module's gradient RMS), AdamW's step has a
        random sign: up to about the LR, twice that with margin."""
        if name not in grads:
            return 0.0
        scale = torch.cat([g.flatten() for g in grads.values()]).pow(2).mean().sqrt()
        return (grads[name].abs() < 1e-3 * scale).to(like.dtype) * 3 * lr

    def update(name: str, ours: torch.Tensor, theirs: torch.Tensor, before: torch.Tensor) -> None:
        """A step whose gradient went through the discriminator: the update to 5% of its norm. The reference's
        float32 gradient of the discriminator is 1% off its float64 value there (ours: 2e-5; measured on step 4's
        input), and AdamW turns the rounding of small gradients into steps of the LR's size."""
        tolerance = 0.05 * float((theirs - before).norm()) + 1e-6 * theirs.numel() ** 0.5
        errors.setdefault(name, []).append(float((ours - theirs).norm()) / tolerance)

    class InOrder:
        """The reference's batches in its order, one per step."""

        batch_size, num_samples, start = k["batch"], k["batch"] * k["steps_per_epoch"], 0

        def loader(self) -> DataLoader:
            return DataLoader(list(zip(tensors["steps.latents"], tensors["steps.images"])), batch_size=None)

    class Teleport(L.Callback):
        """Before each step, the reference's state; after it, our state against the reference's next one."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            i = trainer.global_step
            pl_module.model.load_state_dict(ours_names(part(f"steps.state.{i}.decoder.")))
            pl_module.ema.module.load_state_dict(ours_names(part(f"steps.state.{i}.ema.")))
            pl_module.disc.heads.load_state_dict(part(f"steps.state.{i}.heads."))
            opt = trainer.optimizers[0]
            opt.state.clear()
            for group, named in ((0, dict(pl_module.model.named_parameters())),
                                 (1, dict(pl_module.disc.heads.named_parameters()))):
                prefix = f"steps.state.{i}.{'adam_decoder' if group == 0 else 'adam_heads'}"
                moments = {key: part(f"{prefix}.{key}.") for key in ("exp_avg", "exp_avg_sq")}
                steps = set(part(f"{prefix}.step.").values())  # one count: every parameter stepped each time
                if group == 0:
                    moments = {key: ours_names(v) for key, v in moments.items()}
                for name, p in named.items():
                    if name in moments["exp_avg"]:
                        opt.state[p] = {"step": next(iter(steps)).clone(),
                                        **{key: moments[key][name].clone() for key in moments}}
            torch.set_rng_state(tensors[f"steps.state.{i}.rng"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            i = trainer.global_step  # after this step
            lr, gan = k["lr"], i > cfg.disc_start  # the decoder's gradient went through the discriminator
            for key, ours in (("decoder", pl_module.model), ("ema", pl_module.ema.module)):
                grads = ours_names(part(f"steps.grad.{i - 1}.decoder."))
                expected, before = (ours_names(part(f"steps.state.{j}.{key}.")) for j in (i, i - 1))
                for name, value in ours.state_dict().items():
                    if gan:
                        update(key, value, expected[name], before[name])
                    else:
                        decay = 1 - k["ema_decay"] if key == "ema" else 1
                        worst(key, value, expected[name], decay * slack(grads, name, lr, value))
            grads, expected, before = (part(prefix) for prefix in (
                f"steps.grad.{i - 1}.heads.", f"steps.state.{i}.heads.", f"steps.state.{i - 1}.heads."))
            for name, value in pl_module.disc.heads.state_dict().items():
                if name.endswith(("0.0.bias", "fn.0.bias")):  # a convolution's bias before a norm: no gradient,
                    scale = torch.cat([g.flatten() for g in grads.values()]).abs().max() if grads else 1
                    assert not grads or grads[name].abs().max() < 1e-4 * scale  # so AdamW steps it on round-off
                elif name in grads:
                    update("heads", value, expected[name], before[name])
                else:  # the power-iteration vectors, from the weights the step started from
                    worst("heads", value, expected[name])

    ours_weight = []

    def given_weight(rec, gan, layer, limit):
        """Ours is computed and kept; the step goes on with the reference's. The adaptive weight is a ratio of two
        gradient norms through the discriminator heads, whose rounding it amplifies: on 1 and on 2 CPU threads ours
        differs by 1e-3 (relative; measured) from the same state. With the reference's, the step's other
        parts are compared at float32 rounding."""
        ours_weight.append(adaptive_weight(rec, gan, layer, limit))
        return tensors["steps.gan_weight"][module.global_step].clone()

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(stage1_module, "adaptive_weight", given_weight)
    monkeypatch.chdir(tmp_path)  # Lightning's logs
    try:
        curve = fit(module, InOrder(), TrainerConfig("cpu", 1, 1, "auto", "32-true", 1),
                    runtime(log_every_n_steps=1), "steps", 0, callbacks=(Teleport(),))
    finally:
        monkeypatch.undo()
    assert curve["step"].tolist() == list(range(1, cfg.steps + 1))  # a row after each step: that step's terms
    for name in ("l1", "gan", "disc"):
        ours = torch.tensor(curve[name].to_numpy(), dtype=torch.float32)
        theirs = tensors[f"steps.{name}"]
        assert torch.equal(ours.isnan(), theirs.isnan()), name  # the same steps have each term
        for a, b in zip(ours[~ours.isnan()], theirs[~theirs.isnan()]):
            worst(name, a, b, 1e-5 * b.abs() if name in ("gan", "disc") else 0.0)  # through the discriminator
    theirs = tensors["steps.gan_weight"]
    assert len(ours_weight) == int((~theirs.isnan()).sum())
    for a, b in zip(ours_weight, theirs[~theirs.isnan()]):
        worst("gan_weight", a, b, 1e-2 * b.abs())  # ten times the rounding measured above
    return errors


def test_stage1_training_steps_equal_the_reference(ref, tmp_path):
    """Six stage-1 steps, each from the reference's state at that step (set-up included: the decoder's position table
    trains, as `decoder.requires_grad_(True)` makes it): the same loss terms (L1, GAN term, adaptive weight,
    discriminator hinge), and the same decoder, EMA and discriminator heads after it. The reference's order holds:
    generator step, EMA, then the discriminator step on the decoding by the just-updated decoder."""
    from unirae_pipeline.training.rae import RAEModule

    errors = _stage1_replay(ref, tmp_path, RAEModule)
    assert set(errors) == {"decoder", "ema", "heads", "l1", "gan", "gan_weight", "disc"}
    worst = {name: max(values) for name, values in errors.items()}  # difference / tolerance
    assert all(ratio <= 1 for ratio in worst.values()), worst


def test_the_old_stage1_step_order_departs_from_the_reference(ref, tmp_path):
    """The order this pipeline once had, the discriminator stepping on the decoding by the decoder as it was before
    the generator's update, fails the same comparison: it can tell the orders apart."""
    import copy

    from unirae_pipeline.training.rae import RAEModule

    class OldOrder(RAEModule):
        def training_step(self, batch, batch_idx):
            self.__dict__["_before"] = copy.deepcopy(self.model)
            return super().training_step(batch, batch_idx)

        def discriminator_loss(self, z, x):
            with torch.no_grad():
                fakes = to_8bit(self.__dict__["_before"].eval()(z) * 2 - 1)
            self.disc.train()
            fakes, reals = self.augment(fakes), self.augment(x * 2 - 1)
            d_fake, d_real = self.disc(fakes), self.disc(reals)
            return {"disc": hinge_d_loss(d_real, d_fake), "disc_accuracy": (d_real > d_fake).float().mean()}

    from unirae_pipeline.training.rae import hinge_d_loss, to_8bit

    errors = _stage1_replay(ref, tmp_path, OldOrder)
    worst = {name: max(values) for name, values in errors.items()}  # the reference's order: heads 0.2, disc 0.4
    assert worst["heads"] > 3 and worst["disc"] > 1, worst  # (measured; here 9.6 and 3.2)
    assert worst["l1"] <= 1  # the generator's side is untouched


@pytest.mark.parametrize("train_tables", [True, False])
def test_dit_training_step_moves_the_tables_as_the_reference(ref, imagenet, tmp_path, train_tables):
    """One step of the reference's stage-2 trainer from its own set-up (`model.requires_grad_(True)`, the optimizer
    over every parameter that then requires grad) with the paper recipe: `train_dit.train_tables` (its value in
    profile=imagenet) moves the position table and the Fourier frequencies as the reference moves them, and every
    other weight and the EMA alike; with the tables frozen, the step departs from the reference there only."""
    import lightning as L
    from torch.utils.data import DataLoader

    from unirae_pipeline.training.fit import fit
    from unirae_pipeline.training.modules import TrainModule

    tensors, meta = ref
    sizes = {**json.loads(json.dumps(read_fixture()[1]["dit"])), **meta["dit_step"]["dit"]}
    part = lambda prefix: {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}  # noqa: E731
    model = load_official_dit(part("dit_step.init."), **sizes).train()
    assert imagenet["train_dit"]["train_tables"] is True
    recipe = build(DiTTrainConfig, {**imagenet["train_dit"], "unit": "steps", "duration": 1, "decay_start": 10,
                                    "decay_end": 20, "guide_at": 1, "train_tables": train_tables}, "train_dit")
    shift = math.sqrt(32 * 4 * 4 / meta["shift_base"])
    transport = TransportConfig("logit_normal", meta["shift_base"], 0.0, 1.0, "mean_var")
    module = TrainModule(model, recipe, lambda net, batch: dit_objective(net, batch, transport=transport, shift=shift))

    class OneBatch:
        batch_size, num_samples, start = 6, 6, 0

        def loader(self) -> DataLoader:
            return DataLoader([(tensors["dit_step.x"], tensors["dit_step.y"])], batch_size=None)

    class Reseed(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            torch.manual_seed(meta["dit_step"]["seed"])

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        curve = fit(module, OneBatch(), TrainerConfig("cpu", 1, 1, "auto", "32-true", 1), runtime(), "step", 0,
                    callbacks=(Reseed(),))
    assert curve["loss"].iloc[0] == pytest.approx(float(tensors["dit_step.loss"]), rel=1e-5)
    lr, before = recipe.lr, part("dit_step.init.")
    for key, ours in (("model", module.model), ("ema", module.ema.module)):
        expected = part(f"dit_step.{key}.")
        for name, value in ours.state_dict().items():
            moved = (expected[name] - before[name]).abs()
            if key == "model" and name in ("pos_embed", "t_embedder.W"):  # the reference trains them
                assert float(((moved - lr).abs() < 1e-2 * lr).float().mean()) > 0.9, name
            # AdamW's first step moves a weight by the LR or not at all (no gradient), unless its gradient is near
            # AdamW's eps (1e-8), where rounding decides the step's size
            undecided = (moved < 0.9 * lr) & (moved > 1e-3 * lr) if key == "model" else torch.zeros_like(moved) > 0
            frozen = not train_tables and name in ("pos_embed", "t_embedder.W")
            if frozen:  # departs from the reference by the LR (model) or its EMA share
                assert torch.equal(value, before[name]) and float(moved.max()) > 0, name
                continue
            scale = 1 if key == "model" else 1 - recipe.ema_decay
            torch.testing.assert_close(value[~undecided], expected[name][~undecided], rtol=1e-5,
                                       atol=1e-7 + 1e-3 * scale * lr, msg=name)


def test_a_trained_table_loads(ref):
    """A reference checkpoint whose position table and Fourier frequencies trained loads as it is."""
    tensors, meta = ref
    state = {n[len("dit_step.model."):]: v for n, v in tensors.items() if n.startswith("dit_step.model.")}
    model = load_official_dit(state, **{**read_fixture()[1]["dit"], **meta["dit_step"]["dit"]})
    assert torch.equal(model.pos_embed, state["pos_embed"]) and torch.equal(model.t_embedder.W, state["t_embedder.W"])
    steps = {n[len("steps.state.6.decoder."):]: v for n, v in tensors.items() if n.startswith("steps.state.6.decoder.")}
    decoder = load_official_decoder(steps, **meta["steps"]["decoder"])
    assert torch.equal(decoder.pos_embed, steps["decoder_pos_embed"])


def test_the_released_rae_table_is_the_reference_pretrained_configs(configs):
    """Each of the reference's `configs/stage1/pretrained/*.yaml`: the README's row names its decoder and statistics
    files, and our preset encodes at its input size, with its image processor's normalization where we know it."""
    readme = documentation()
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
