"""RAEv2 (nanovisionx/RAEv2@8a0d238): our modules reproduce its code's, checked against fixtures that its code made
(tests/fixtures/make_raev2_fixtures.py) and its released configs (tests/fixtures/raev2_configs.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from unirae_pipeline.config.build import build
from unirae_pipeline.diffusion.sampling import (
    internally_guided_velocity,
    raev2_time_grid,
    sample_ode,
)
from unirae_pipeline.diffusion.transport import draw_raev2, x_prediction_losses, x_to_velocity
from unirae_pipeline.interop.official import load_raev2_dit
from unirae_pipeline.models.dit_raev2 import RAEv2DiTConfig, build_raev2_dit
from unirae_pipeline.models.layers import count_params
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


def test_released_size_preset_is_raev2s_config_with_875m_parameters(configs):
    """conf/raev2_dit/xl.yaml holds the released ImageNet-256 model's values, checked one by one against its config
    (stage_2.params, conditioning.arch): 875.2 M parameters on its 1024x16x16 latents."""
    cfg = configs["configs/stage2/training/imagenet-dinov3l-k7.yaml"]
    params, arch = cfg["stage_2"]["params"], cfg["conditioning"]["arch"]
    dit = build(RAEv2DiTConfig, yaml.safe_load((ROOT / "conf/raev2_dit/xl.yaml").read_text()), "raev2_dit")
    theirs = {"hidden_size": params["hidden_size"][0], "head_hidden_size": params["hidden_size"][1],
              "depth": params["depth"][0], "head_depth": params["depth"][1], "num_heads": params["num_heads"][0],
              "head_num_heads": params["num_heads"][1], "mlp_ratio": params["mlp_ratio"],
              "patch_size": params["patch_size"][0], "base_depth": params["base_model_depth"],
              "time_tokens": arch["num_t_tokens"], "class_tokens": arch["num_c_tokens"],
              "fourier_features": 256}  # GaussianFourierEmbedding's default embedding_size
    assert dit.to_dict() == theirs and params["patch_size"][0] == params["patch_size"][1]
    with torch.device("meta"):
        model = build_raev2_dit(dit, (params["in_channels"], params["input_size"], params["input_size"]),
                                cfg["misc"]["num_classes"], seed=0)
    assert round(count_params(model) / 1e6, 1) == 875.2


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


def test_encoder_readout_equals_raev2s_on_a_native_dinov3_file(tmp_path):
    """RAEv2's readout (each listed block through the affine-free final norm, registers and CLS dropped, their mean,
    plus the last listed block's mean over tokens) of a DINOv3 that facebookresearch/dinov3 built with its ViT-L/16
    settings, read from its native layout through `encoder.weights`: equal to RAEv2's encoder class."""
    from safetensors.torch import save_file

    from unirae_pipeline.interop.encoder_weights import encoder_state
    from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder

    with safe_open(str(FIXTURES / "raev2_encoder.safetensors"), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    sizes, layers = json.loads(meta["sizes"]), json.loads(meta["layers"])
    save_file(part(tensors, "encoder."), str(tmp_path / "dinov3.safetensors"))
    cfg = EncoderConfig("vit_large_patch16_dinov3_qkvb.lvd1689m", str(tmp_path / "dinov3.safetensors"),
                        sizes["img_size"], {k: sizes[k] for k in ("embed_dim", "depth", "num_heads")},
                        layers=layers, readout="mean_plus_global")
    enc = FrozenEncoder(cfg, seed=0, state=encoder_state(cfg))
    latents = enc(tensors["encoder_in"])
    assert latents.shape == (2, 64, 4, 4)
    assert rel_err(latents.flatten(2).transpose(1, 2), tensors["encoder_out"]) < 1e-5
    last = FrozenEncoder(EncoderConfig(cfg.model, cfg.weights, cfg.input_size, cfg.overrides), 0, encoder_state(cfg))
    assert rel_err(last(tensors["encoder_in"]).flatten(2).transpose(1, 2), tensors["encoder_out"]) > 0.1


def test_encoder_readout_params_are_checked_and_fingerprinted():
    from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder

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
