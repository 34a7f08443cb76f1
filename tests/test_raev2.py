"""RAEv2 (nanovisionx/RAEv2@8a0d238): our modules reproduce its code's, checked against fixtures that its code made
(tests/fixtures/make_raev2_fixtures.py) and its released configs (tests/fixtures/raev2_configs.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from unirae_pipeline.config.build import build_typed
from unirae_pipeline.config.params import load_params
from unirae_pipeline.diffusion.sampling import (
    internally_guided_velocity,
    raev2_time_grid,
    sample_ode,
)
from unirae_pipeline.diffusion.transport import draw_raev2, x_prediction_losses, x_to_velocity
from unirae_pipeline.interop.encoder_weights import encoder_state
from unirae_pipeline.interop.official import load_raev2_dit
from unirae_pipeline.models.dit import AnyDiTConfig
from unirae_pipeline.models.dit_raev2 import RAEv2DiTConfig, build_raev2_dit
from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder
from unirae_pipeline.models.layers import count_params
from unirae_pipeline.tools.compose import compose_params
from unirae_pipeline.training.muon import GRAM_RESTARTS, newton_schulz

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


def read_tiny() -> tuple[dict[str, torch.Tensor], dict, dict[str, str]]:
    """(tensors, the DiT's keywords, the generator's other settings) of the fixture made by RAEv2's code."""
    with safe_open(str(FIXTURES / "raev2_tiny.safetensors"), framework="pt") as f:
        meta = f.metadata()
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(meta["dit"]), meta


@pytest.fixture(scope="module")
def tiny() -> tuple[dict[str, torch.Tensor], dict]:
    return read_tiny()[:2]


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    return read_tiny()[2]


@pytest.fixture(scope="module")
def configs() -> dict:
    return json.loads((FIXTURES / "raev2_configs.json").read_text())["configs"]


def part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_dit_equals_raev2s_for_identical_weights_both_heads(tiny):
    tensors, kwargs = tiny
    model = load_raev2_dit(part(tensors, "dit."), **kwargs)
    with torch.no_grad():
        full, base = model(tensors["dit_in.x"], tensors["dit_in.t"], tensors["dit_in.y"])
    assert rel_err(full, tensors["dit_out.full"]) < 1e-5 and rel_err(base, tensors["dit_out.base"]) < 1e-5
    assert full.shape == base.shape == (3, 32, 4, 4) and model.cfg.base_depth == 2
    assert (model.cfg.time_tokens, model.cfg.class_tokens, model.cfg.fourier_features) == (4, 8, 256)


def test_the_base_head_reads_the_trunk_after_base_depth_blocks(tiny):
    """Changing a block after the base head's depth changes the full prediction and leaves the base one as it was."""
    tensors, kwargs = tiny
    model = load_raev2_dit(part(tensors, "dit."), **kwargs)
    args = tensors["dit_in.x"], tensors["dit_in.t"], tensors["dit_in.y"]
    with torch.no_grad():
        model.blocks[2].mlp.w3.bias.add_(1.0)
        full, base = model(*args)
    assert torch.equal(base, model(*args)[1]) and rel_err(base, tensors["dit_out.base"]) < 1e-5
    assert rel_err(full, tensors["dit_out.full"]) > 1e-2


def test_a_seed_draws_raev2s_initial_weights(tiny):
    """Same modules, created and initialized in RAEv2's order: the seed RAEv2 built its model from gives its weights
    (the Fourier frequencies, the learned tokens, every default-initialized Linear, the zeroed heads)."""
    tensors, kwargs = tiny
    ours = load_raev2_dit(part(tensors, "dit."), **kwargs)  # the architecture
    built = build_raev2_dit(ours.cfg, (32, 4, 4), 10, seed=0).state_dict()
    init = {k: v for k, v in part(tensors, "init.").items() if "rope" not in k}
    assert built.keys() == init.keys()
    assert all(torch.equal(built[k], v) for k, v in init.items()), [k for k, v in init.items()
                                                                     if not torch.equal(built[k], v)][:5]
    assert not built["base_final_layer.linear.weight"].any() and not built["final_layer.linear.weight"].any()


@pytest.fixture(scope="module")
def profile() -> dict:
    return compose_params(["profile=raev2"], conf_dir=ROOT / "conf")


def test_profile_raev2_holds_the_released_dit_with_875m_parameters(configs, profile):
    """profile=raev2's DiT (dit=raev2_XL) is the released ImageNet-256 model, value by value against its config
    (stage_2.params, conditioning): 875.2 M parameters on its 1024x16x16 latents."""
    cfg = configs["configs/stage2/training/imagenet-dinov3l-k7.yaml"]
    params, cond = cfg["stage_2"]["params"], cfg["conditioning"]
    dit = build_typed(AnyDiTConfig, profile["dit"], "dit")
    theirs = {"hidden_size": params["hidden_size"][0], "head_hidden_size": params["hidden_size"][1],
              "depth": params["depth"][0], "head_depth": params["depth"][1], "num_heads": params["num_heads"][0],
              "head_num_heads": params["num_heads"][1], "mlp_ratio": params["mlp_ratio"],
              "patch_size": params["patch_size"][0], "base_depth": params["base_model_depth"],
              "time_tokens": cond["arch"]["num_t_tokens"], "class_tokens": cond["arch"]["num_c_tokens"],
              "class_dropout_prob": cond["cfg_dropout_prob"], "label_init_std": 0.02, "arch": "raev2",
              "fourier_features": 256}  # GaussianFourierEmbedding's default embedding_size
    assert isinstance(dit, RAEv2DiTConfig) and dit.to_dict() == theirs
    assert params["patch_size"][0] == params["patch_size"][1] and cond["type"] == "label"
    shape = cfg["misc"]["latent_size"]
    assert shape == [params["in_channels"], params["input_size"], params["input_size"]]
    with torch.device("meta"):
        model = build_raev2_dit(dit, tuple(shape), cfg["misc"]["num_classes"], seed=0)
    assert round(count_params(model) / 1e6, 1) == 875.2


def _global_batch(params: dict, stage: str) -> int:
    trainer = params["trainer"]
    return params[stage]["batch_size"] * trainer["devices"] * trainer["num_nodes"] * trainer["accumulate_grad_batches"]


def test_profile_raev2_equals_raev2s_three_configs(configs, profile):
    """profile=raev2 against RAEv2's stage-1 training, stage-2 training and sampling YAMLs, value by value: what
    each key of theirs sets is the same here (the DiT in the test above)."""
    s1 = configs["configs/stage1/training/dinov3l-k7-imagenet.yaml"]
    s2 = configs["configs/stage2/training/imagenet-dinov3l-k7.yaml"]
    sampling = configs["configs/stage2/sampling/imagenet-dinov3l-k7.yaml"]
    enc, dec, rae = profile["encoder"], profile["decoder"], profile["train_rae"]
    # stage 1: the encoder, the decoder (no de-normalization, tau 0.8), the recipe, the GAN
    name = s1["stage_1"]["params"]["encoder_name"]
    assert name == f"dinov3mls-vit-l16[layers={'.'.join(map(str, enc['layers']))}]"
    assert (enc["model"], enc["readout"], enc["input_size"]) == (
        "vit_large_patch16_dinov3_qkvb.lvd1689m", "mean_plus_global", s1["stage_1"]["params"]["resolution"])
    assert profile["data"]["image_size"] == s1["training"]["image_size"] == s2["training"]["image_size"]
    assert not dec["denormalize"] and dec["noise_tau"] == s1["stage_1"]["params"]["noise_tau"]
    assert (dec["hidden_size"], dec["depth"], dec["num_heads"], dec["mlp_dim"]) == (1152, 28, 16, 4096)  # ViTXL
    t1, sched = s1["training"], s1["training"]["scheduler"]
    assert _global_batch(profile, "train_rae") == t1["global_batch_size"] and rae["duration"] == t1["epochs"]
    assert (rae["unit"], rae["lr"], list(rae["betas"]), rae["weight_decay"], rae["ema_decay"], rae["grad_clip"]) == (
        "epochs", t1["optimizer"]["lr"], t1["optimizer"]["betas"], t1["optimizer"]["weight_decay"], t1["ema_decay"],
        t1["clip_grad"])
    assert sched["warmup_from_zero"] and (rae["schedule"], rae["warmup"], rae["final_lr"]) == (
        sched["type"], sched["warmup_epochs"], sched["final_lr"])
    assert rae["decay_end"] in (None, sched["decay_end_epoch"]) and sched["decay_end_epoch"] == t1["epochs"]
    loss = s1["gan"]["loss"]
    assert (rae["lpips_weight"], rae["gan_weight"], rae["lpips_start"], rae["disc_start"], rae["disc_upd_start"],
            rae["max_d_weight"]) == (loss["perceptual_weight"], loss["disc_weight"], loss["lpips_start"],
                                     loss["disc_start"], loss["disc_upd_start"], loss["max_d_weight"])
    assert s1["gan"]["scheduler"] == sched and s1["gan"]["optimizer"] == t1["optimizer"]
    assert rae["disc"]["kernel_size"] == s1["gan"]["arch"]["ks"] and s1["gan"]["augment"]["cutout"] == 0
    assert rae["source"] == "images" and rae["resize_ratio"] is None  # Resize(256) of pre-cropped images: centre
    with safe_open(str(FIXTURES / "raev2_encoder.safetensors"), framework="pt") as f:  # its DINOv3 hub's ViT-L
        assert rae["encoder_rope_rescale"] == float(f.metadata()["rope_rescale_coords"])  # train mode in stage 1
    assert not profile["latents"]["hflip"]  # RAEv2 mirrors no image in either stage
    # stage 2: the latents' normalization, the objective, the optimizer and its schedule
    assert s2["stage_1"]["params"]["noise_tau"] == 0.0  # the decoder in eval mode: no noise in stage 2 anyway
    assert profile["diffusion"]["latent_norm"] == "mean_var"  # stats.pt: mean and var
    assert s2["transport"] == {"prediction": "x", "time_dist_type": "logit-normal_0_1"}
    diffusion = profile["diffusion"]
    assert (diffusion["time_dist"], diffusion["logit_mean"], diffusion["logit_std"]) == ("logit_normal", 0.0, 1.0)
    misc = s2["misc"]
    assert diffusion["shift_base"] == misc["time_dist_shift_base"]
    assert misc["time_dist_shift_dim"] == misc["latent_size"][0] * misc["latent_size"][1] * misc["latent_size"][2]
    t2, dit = s2["training"], profile["train_dit"]
    assert _global_batch(profile, "train_dit") == t2["global_batch_size"] and t2["grad_accum_steps"] == 1
    assert (dit["unit"], dit["duration"], dit["ema_decay"], dit["grad_clip"]) == (
        "epochs", t2["epochs"], t2["ema_decay"], t2["clip_grad"])
    opt = t2["optimizer"]
    assert (opt["type"], opt["ns_coefficients_preset"], opt["ns_use_kernels"]) == (
        "gmuon", "POLAR_EXPRESS_COEFFICIENTS", False)  # training.muon's POLAR_EXPRESS, in plain torch
    assert (dit["lr"], dit["weight_decay"], dit["muon"]["momentum"], dit["muon"]["nesterov"]) == (
        opt["lr"], opt["weight_decay"], opt["momentum"], opt["nesterov"])
    assert list(dit["betas"]) == [0.9, 0.95] and dit["muon"]["precision"] == "fp16"  # AdamW's defaults in RAEv2
    sched = t2["scheduler"]
    assert not sched["warmup_from_zero"] and dit["warmup"] == 0  # its "warm-up" holds the LR constant
    assert (dit["schedule"], dit["decay_start"], dit["decay_end"], dit["lr"], dit["final_lr"]) == (
        sched["type"], sched["warmup_epochs"], sched["decay_end_epoch"], sched["base_lr"], sched["final_lr"])
    assert dit["train_tables"] and profile["seed"] == t2["global_seed"]
    assert profile["trainer"]["precision"] == "bf16-mixed" and profile["runtime"]["compile"]  # its README's flags
    # sampling: the same models, RAEv2's grid with 100 Euler steps, internal guidance, no CFG
    assert sampling["stage_2"]["params"] == s2["stage_2"]["params"] and sampling["conditioning"] == s2["conditioning"]
    sampler, guidance = profile["sample"]["sampler"], sampling["guidance"]
    assert (sampler["method"], sampler["num_steps"] - 1) == ("euler", sampling["sampler"]["num_steps"])
    assert (sampler["ig_scale"], sampler["ig_t_min"], sampler["ig_t_max"]) == (
        guidance["ig"]["scale"], guidance["ig"]["t_min"], guidance["ig"]["t_max"])
    assert (sampler["guidance"], sampler["guidance_scale"], sampler["guidance_t_min"], sampler["guidance_t_max"]) == (
        "cfg", guidance["cfg"]["scale"], guidance["cfg"]["t_min"], guidance["cfg"]["t_max"])
    evaluation = sampling["eval"]["datasets"]["imagenet"]
    assert profile["sample"]["num_per_class"] * misc["num_classes"] == evaluation["num_samples"]
    assert profile["sample"]["precision"] == "bf16"
    assert load_params(profile).dit.arch == "raev2"  # and the whole tree builds


def test_loader_refuses_what_it_cannot_hold(tiny):
    tensors, kwargs = tiny
    state = part(tensors, "dit.")
    with pytest.raises(KeyError, match="unknown keys \\['extra.weight'\\]"):
        load_raev2_dit({**state, "extra.weight": torch.zeros(1)}, **kwargs)
    with pytest.raises(KeyError, match="missing keys \\['base_final_layer.linear.bias'\\]"):
        load_raev2_dit({k: v for k, v in state.items() if k != "base_final_layer.linear.bias"}, **kwargs)
    with pytest.raises(ValueError, match="cond_arch.num_c_tokens=4 but the weights hold 8"):
        load_raev2_dit(state, **kwargs, cond_arch={"num_t_tokens": 4, "num_c_tokens": 4})
    with pytest.raises(ValueError, match="enc_rope.freqs_cos in the checkpoint differs"):
        load_raev2_dit({**state, "enc_rope.freqs_cos": state["enc_rope.freqs_cos"] * 2}, **kwargs)
    with pytest.raises(ValueError, match="dit.base_depth must be in \\[1, dit.depth=4\\], got 5"):
        load_raev2_dit(state, **{**kwargs, "base_model_depth": 5})
    with pytest.raises(ValueError, match="condition_type='text' is not supported"):
        load_raev2_dit(state, **kwargs, condition_type="text")
    wrapped = {f"module._orig_mod.{k}": v for k, v in state.items()}  # DDP and torch.compile prefixes
    assert load_raev2_dit(wrapped, **kwargs).cfg.depth == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_equals_raev2s_training_losses_for_a_seed(tiny, settings, seed):
    """Label mask, noise and time drawn in RAEv2's order from the same seed, then its loss: x-prediction turned into
    velocity with t clamped at 0.05, both heads, the base head weighted 1, summed before the mean."""
    tensors, kwargs = tiny
    shift, dropout = float(settings["loss_shift"]), float(settings["label_dropout"])
    model = load_raev2_dit(part(tensors, "dit."), **kwargs)
    x, y, want = tensors["loss_in.x"], tensors["loss_in.y"], part(tensors, f"loss_{seed}.")
    torch.manual_seed(seed)
    labels, noise, t = draw_raev2(x, y, null_label=10, label_dropout=dropout, shift=shift)
    assert torch.equal(labels == 10, want["mask"]) and torch.equal(noise, want["noise"]) and torch.equal(t, want["t"])
    with torch.no_grad():
        terms = x_prediction_losses(model, x, labels, t, noise, t_eps=0.05, base_coeff=1.0)
    assert rel_err(terms["loss"], want["loss"]) < 1e-5 and rel_err(terms["loss_base"], want["loss_base"]) < 1e-5
    assert torch.allclose(terms["loss"], terms["loss_full"] + terms["loss_base"])


def test_x_to_velocity_clamps_small_times():
    """Below t_eps the division uses t_eps (finite at t = 0); above it, (x_t - x_hat) / t is the path's velocity."""
    x, noise = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    t = torch.tensor([0.0, 0.5])
    x_t = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * noise
    v = x_to_velocity(x_t, x, t, 0.05)
    assert torch.allclose(v[1], noise[1] - x[1], atol=1e-6) and torch.equal(v[0], torch.zeros_like(v[0]))
    assert torch.allclose(x_to_velocity(x_t, x - 1, t, 0.05)[0], torch.full_like(v[0], 20.0))


def test_time_grid_is_raev2s(tiny, settings):
    grid = raev2_time_grid(int(settings["sample_steps"]), float(settings["loss_shift"]))
    assert torch.equal(grid, tiny[0]["sample_grid"]) and grid[0] == 1 and grid[-1] == 0


@pytest.mark.parametrize("name", ["none", "ig", "cfg", "ig_cfg", "ig_cfg_uncond"])
def test_euler_samples_equal_raev2s_under_each_guidance(tiny, settings, name):
    """Internal guidance from the base head on its interval, CFG on its own, both (the null class's IG scale given
    or not), and none: the same noise and labels give RAEv2's samples. Both in float64 (the norms round to fp32 in
    both): in fp32, CFG 2.5 amplifies a CPU's rounding to about 1e-5 of the samples, measured against float64."""
    tensors, kwargs = tiny
    guidance = json.loads(settings["samplers"])[name]
    ig, cfg = guidance["ig"], guidance["cfg"]
    model = load_raev2_dit(part(tensors, "dit."), **kwargs).double()
    velocity = internally_guided_velocity(
        model, 0.05, 10, ig["scale"], ig.get("t_min", 0.0), ig.get("t_max", 1.0),
        cfg["scale"], cfg.get("t_min", 0.0), cfg.get("t_max", 1.0), ig.get("unconditional_scale"))
    grid = raev2_time_grid(int(settings["sample_steps"]), float(settings["loss_shift"]))
    out = sample_ode(velocity, tensors["sample_in.z"], tensors["sample_in.y"], grid, "euler")
    assert out.dtype == torch.float64 and rel_err(out, tensors[f"sample_out.{name}"]) < 1e-6


@pytest.fixture(scope="module")
def optim() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURES / "raev2_optim.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# Half precision: the iteration runs in fp16 (unit roundoff 4.9e-4) and the update is rounded to bf16 (3.9e-3), so
# two CPUs may differ by a few bf16 units in an update; 2e-2 of the largest still fails any wrong coefficient, step
# order, LR adjustment or parameter split.
HALF = 2e-2


@pytest.mark.parametrize("shape", ["square", "wide", "tall"])
def test_newton_schulz_equals_raev2s(optim, shape):
    """Polar Express's five per-step coefficients, the fp16 iteration, the Gram form with its restart for
    non-square matrices: RAEv2's orthogonalization of the same bf16 matrices."""
    tensors, _ = optim
    assert tuple(tensors["ns.restarts"].tolist()) == GRAM_RESTARTS
    out = newton_schulz(tensors[f"ns.{shape}.in"]).to(torch.bfloat16).float()  # Muon's updates are bf16
    want = tensors[f"ns.{shape}.out"].float()
    assert rel_err(out, want) < HALF
    singular = torch.linalg.svdvals(out)  # near-orthogonal: singular values near 1 (Polar Express's band)
    assert singular.min() > 0.5 and singular.max() < 1.3


def test_muon_adamw_steps_equal_raev2s_gmuon(optim):
    """From the same weights and (clipped) gradients: three steps of Muon for the matrices and AdamW for the rest,
    the linear schedule (constant to epoch 25) moving both, and the EMA, as RAEv2's loop takes them."""
    from unirae_pipeline.models.dit_raev2 import RAEv2DiT
    from unirae_pipeline.training.muon import muon_adamw
    from unirae_pipeline.training.optim import EMA, OptimConfig, lr_factor

    tensors, meta = optim
    model = load_raev2_dit(part(tensors, "init."), **json.loads(meta["dit"])).train()
    assert isinstance(model, RAEv2DiT)
    model.requires_grad_(True)  # RAEv2 trains every parameter, the Fourier frequencies too
    lr, spe = float(meta["lr"]), int(meta["steps_per_epoch"])
    recipe = OptimConfig(unit="epochs", duration=80, batch_size=8, lr=lr, final_lr=lr / 10, betas=(0.9, 0.95),
                         weight_decay=0.0, warmup=0, schedule="linear", decay_start=25, decay_end=50,
                         ema_decay=0.9995, grad_clip=1.0, fit_batch=False).in_steps(spe)
    opt = muon_adamw(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(recipe, step))
    ema = EMA(model, recipe.ema_decay)
    params = dict(model.named_parameters())
    for step in range(3):
        for name, p in params.items():
            p.grad = tensors[f"step{step}.grad.{name}"].clone()
        before = {name: p.detach().clone() for name, p in params.items()}
        opt.step()
        opt.zero_grad()
        sched.step()
        ema.update(model)
        for name, p in params.items():
            moved, want = p.detach() - before[name], tensors[f"step{step}.param.{name}"] - before[name]
            assert want.abs().max() > 0 and rel_err(moved, want) < HALF, (step, name)
        assert torch.allclose(torch.tensor([g["lr"] for g in opt.param_groups], dtype=torch.float64),
                              tensors[f"step{step}.lr"])
    for name, p in ema.module.named_parameters():
        assert torch.allclose(p, tensors[f"ema.{name}"], rtol=0, atol=2e-6), name  # lerp vs mul/add: a few ulps


def test_linear_schedule_equals_raev2s(optim):
    """Constant to epoch 25 (no warm-up, not from zero), linear to a tenth at epoch 50, then held."""
    from unirae_pipeline.training.optim import OptimConfig, lr_factor

    tensors, meta = optim
    spe = int(meta["steps_per_epoch"])
    recipe = OptimConfig(unit="epochs", duration=80, batch_size=8, lr=1.0, final_lr=0.1, betas=(0.9, 0.95),
                         weight_decay=0.0, warmup=0, schedule="linear", decay_start=25, decay_end=50,
                         ema_decay=0.9995, grad_clip=1.0, fit_batch=False).in_steps(spe)
    ours = torch.tensor([lr_factor(recipe, s) for s in range(len(tensors["schedule"]))], dtype=torch.float64)
    assert torch.allclose(ours, tensors["schedule"], rtol=0, atol=1e-12)


def read_encoder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], EncoderConfig]:
    """The encoder fixture's tensors and metadata, and RAEv2's readout of its DINOv3 as `encoder` params, the
    weights written to `folder` in DINOv3's native layout."""
    from safetensors.torch import save_file

    with safe_open(str(FIXTURES / "raev2_encoder.safetensors"), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    sizes, layers = json.loads(meta["sizes"]), json.loads(meta["layers"])
    save_file(part(tensors, "encoder."), str(folder / "dinov3.safetensors"))
    cfg = EncoderConfig("vit_large_patch16_dinov3_qkvb.lvd1689m", str(folder / "dinov3.safetensors"),
                        sizes["img_size"], {k: sizes[k] for k in ("embed_dim", "depth", "num_heads")},
                        layers=layers, readout="mean_plus_global")
    return tensors, meta, cfg


def test_encoder_readout_equals_raev2s_on_a_native_dinov3_file(tmp_path):
    """RAEv2's readout (each listed block through the affine-free final norm, registers and CLS dropped, their mean,
    plus the last listed block's mean over tokens) of a DINOv3 that facebookresearch/dinov3 built with its ViT-L/16
    settings, read from its native layout through `encoder.weights`: equal to RAEv2's encoder class."""
    tensors, meta, cfg = read_encoder(tmp_path)
    enc = FrozenEncoder(cfg, seed=0, state=encoder_state(cfg))
    latents = enc(tensors["encoder_in"])
    assert latents.shape == (2, 64, 4, 4)
    assert rel_err(latents.flatten(2).transpose(1, 2), tensors["encoder_out"]) < 1e-5
    last = FrozenEncoder(EncoderConfig(cfg.model, cfg.weights, cfg.input_size, cfg.overrides), 0, encoder_state(cfg))
    assert rel_err(last(tensors["encoder_in"]).flatten(2).transpose(1, 2), tensors["encoder_out"]) > 0.1


def test_encoder_in_train_mode_equals_raev2s_stage_one(tmp_path):
    """RAEv2's stage 1 runs DINOv3 in train mode: each block rescales the RoPE coordinates by its own log-uniform
    factor in [1/2, 2]. `FrozenEncoder(..., rope_rescale=2).forward(x, rescale_rope=True)` draws the same factors from
    the same seed (one per block, in order) and equals RAEv2's encoder class in train mode; without the flag it is
    the eval-mode encoder, and its fingerprint does not change."""
    tensors, meta, cfg = read_encoder(tmp_path)
    rescale = float(meta["rope_rescale_coords"])
    plain, enc = FrozenEncoder(cfg, 0, encoder_state(cfg)), FrozenEncoder(cfg, 0, encoder_state(cfg), rescale)
    images, train = tensors["encoder_in"], tensors["encoder_out_train"]
    torch.manual_seed(int(meta["train_seed"]))
    jittered = enc(images, rescale_rope=True).flatten(2).transpose(1, 2)
    assert rel_err(jittered, train) < 1e-5
    assert rel_err(train, tensors["encoder_out"]) > 1e-2  # the fixture's train mode differs from its eval mode
    assert torch.equal(enc(images), plain(images)) and enc.fingerprint() == plain.fingerprint()
    assert rel_err(enc(images, rescale_rope=True).flatten(2).transpose(1, 2), train) > 1e-3  # a new draw
    with pytest.raises(ValueError, match="needs an encoder built with rope_rescale"):
        plain(images, rescale_rope=True)
    with pytest.raises(ValueError, match="needs a DINOv3 encoder"):
        FrozenEncoder(EncoderConfig("vit_small_patch14_reg4_dinov2", "none", 16, {"patch_size": 4, "embed_dim": 64,
                                    "depth": 2, "num_heads": 4}), 0, rope_rescale=2.0)


def test_encoder_readout_params_are_checked_and_fingerprinted():
    tiny = dict(model="vit_small_patch14_reg4_dinov2", weights="none", input_size=16,
                overrides={"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4})
    with pytest.raises(ValueError, match="'last' reads the final block"):
        EncoderConfig(**tiny, layers=[1, 3])
    with pytest.raises(ValueError, match="'last' reads the final block"):
        EncoderConfig(**tiny, readout="mean_plus_global")
    with pytest.raises(ValueError, match=r"encoder.layers \[1, 4\] must be increasing 0-based block indices"):
        EncoderConfig(**tiny, layers=[1, 4], readout="mean_plus_global")
    plain, k2 = EncoderConfig(**tiny), EncoderConfig(**tiny, layers=[1, 3], readout="mean_plus_global")
    assert FrozenEncoder(plain, 0).fingerprint() != FrozenEncoder(k2, 0).fingerprint()
    assert "layers" not in plain.identity()  # the default readout keeps the fingerprints cached latents carry


def test_decoder_outputs_pixels_as_raev2s_decode():
    """RAEv2's stage-1 decoder reads a released `decoder.pt` and, after the statistics are undone (mean and var,
    `load_official_stats`), its output is the image: no ImageNet de-normalization, unlike RAE's."""
    from unirae_pipeline.data.normalization import denormalize
    from unirae_pipeline.interop.official import load_official_stats, load_raev2_decoder

    with safe_open(str(FIXTURES / "raev2_decoder.safetensors"), framework="pt") as f:
        tensors, sizes = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["decoder"])
    decoder = load_raev2_decoder(part(tensors, "decoder."), **sizes)
    stats = load_official_stats({"mean": tensors["stats.mean"], "var": tensors["stats.var"]})
    with torch.no_grad():
        image = decoder(denormalize(tensors["decoder_in"], stats["mean"], stats["var"]))
    assert decoder.pixel_norm == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert rel_err(image, tensors["decoder_out"]) < 1e-5


def test_sampling_released_raev2_models_through_the_catalog(tiny, tmp_path):
    """RAEv2's release in conf/local/catalog.yml: its checkpoint (the `ema` entry), decoder.pt and stats.pt, read by
    OfficialModelDataset as kinds raev2_dit, raev2_decoder and raev2_stats, feed the sample node, which integrates
    RAEv2's grid with internal guidance and decodes without de-normalizing: the images of the same steps taken by
    hand. RAE's statistics carry another fingerprint and are refused beside RAEv2's DiT."""
    from unirae_pipeline.data.normalization import denormalize
    from unirae_pipeline.diffusion.transport import shift_factor
    from unirae_pipeline.evaluation.report import to_uint8_nhwc
    from unirae_pipeline.io.official import OfficialModelDataset
    from unirae_pipeline.pipelines.sample.nodes import balanced_labels, sample

    from .conftest import scratch, typed

    tensors, kwargs = tiny
    with safe_open(str(FIXTURES / "raev2_decoder.safetensors"), framework="pt") as f:
        dec, sizes = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["decoder"])
    torch.save({"ema": part(tensors, "dit."), "model": {}}, tmp_path / "checkpoint.pt")
    torch.save(part(dec, "decoder."), tmp_path / "decoder.pt")
    torch.save({"mean": dec["stats.mean"], "var": dec["stats.var"]}, tmp_path / "stats.pt")
    dit = OfficialModelDataset(filepath=str(tmp_path / "checkpoint.pt"), kind="raev2_dit", params=kwargs).load()
    decoder = OfficialModelDataset(filepath=str(tmp_path / "decoder.pt"), kind="raev2_decoder", params=sizes).load()
    stats = OfficialModelDataset(filepath=str(tmp_path / "stats.pt"), kind="raev2_stats").load()
    ig = {"ig_scale": 1.78, "ig_t_min": 0.1, "ig_t_max": 1.0}
    params = typed("sample", {"num_per_class": 1, "batch_size": 10, "shard_size": 10, "grid_per_class": 1,
                              "precision": "fp32", "untrained_baseline": False,
                              "sampler": {"method": "euler", "num_steps": 6, "guidance": "cfg", "guidance_scale": 1.0,
                                          "guidance_t_min": 0.0, "guidance_t_max": 1.0, "sde_norm": 1.0, **ig}})
    diffusion = typed("diffusion", {"time_dist": "logit_normal", "shift_base": 4096, "logit_mean": 0.0,
                                    "logit_std": 1.0, "latent_norm": "mean_var"})
    samples, _, _ = sample(dit, None, dit, decoder, stats, params, diffusion, 0, scratch(tmp_path))
    images = np.concatenate(list(samples.chunks(64)))

    model = load_raev2_dit(part(tensors, "dit."), **kwargs)
    decode = OfficialModelDataset(filepath=str(tmp_path / "decoder.pt"), kind="raev2_decoder", params=sizes).load()
    from unirae_pipeline.models.decoder import decoder_from_file

    decode = decoder_from_file(decode).eval()
    labels = balanced_labels(10, 1, 0)
    noise = torch.randn((10, 32, 4, 4), generator=torch.Generator().manual_seed(0))
    velocity = internally_guided_velocity(model, 0.05, 10, 1.78, 0.1, 1.0)
    with torch.no_grad():
        z = sample_ode(velocity, noise, labels, raev2_time_grid(5, shift_factor((32, 4, 4), 4096)), "euler")
        want = to_uint8_nhwc(decode(denormalize(z, dec["stats.mean"], dec["stats.var"])))
    assert images.shape == (10, 16, 16, 3) and np.abs(images.astype(int) - want.astype(int)).max() <= 1
    assert decode.pixel_norm == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    rae_stats = OfficialModelDataset(filepath=str(tmp_path / "stats.pt"), kind="stats").load()
    with pytest.raises(ValueError, match="fingerprints differ"):
        sample(dit, None, dit, decoder, rae_stats, params, diffusion, 0, scratch(tmp_path))


@pytest.mark.parametrize(("overrides", "message"), [
    (["dit=raev2_tiny"], "diffusion.time_dist=logit_normal"),
    (["method=raev2", "sample.sampler.guidance=autoguidance", "sample.sampler.guidance_scale=1.5"], "AutoGuidance"),
    (["method=raev2", "guide=tiny"], "guide=snapshot"),
    (["sample.sampler.ig_scale=1.5"], "sample.sampler.ig_scale=1"),
    (["dit.arch=ddt"], "'dit.arch' must be one of 'dit_dh', 'raev2'"),
])
def test_params_of_the_other_method_are_refused_naming_the_key(overrides, message):
    from unirae_pipeline.config.params import load_params

    with pytest.raises(ValueError, match=message):
        load_params(compose_params(overrides, conf_dir=ROOT / "conf"))


def test_method_raev2_switches_every_part_and_muon_trains_with_the_schedule():
    """`method=raev2` on the embedded default: RAEv2's DiT, Muon (fp32 iterations on a CPU), the decoder's output
    the image, no mirrors, logit-normal times, internal guidance; the recipe's optimizer is Muon + AdamW, one
    schedule moving both."""
    from unirae_pipeline.training.muon import MuonAdamW, muon_optimizer

    tree = load_params(compose_params(["method=raev2"], conf_dir=ROOT / "conf"))
    assert isinstance(tree.dit, RAEv2DiTConfig) and tree.train_dit.muon.precision == "fp32"
    assert not tree.decoder.denormalize and not tree.latents.hflip and tree.diffusion.time_dist == "logit_normal"
    assert tree.sample.sampler.ig_scale > 1 and tree.train_dit.train_tables
    model = build_raev2_dit(tree.dit, (8, 2, 2), 3, seed=0)
    opt, sched = muon_optimizer(tree.train_dit, model.parameters())
    assert isinstance(opt, MuonAdamW) and len(opt.param_groups) == 2
    first = [g["lr"] for g in opt.param_groups]
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    assert first[0] == first[1] < tree.train_dit.lr  # warm-up
    assert opt.param_groups[0]["lr"] == opt.param_groups[1]["lr"] > first[0]
