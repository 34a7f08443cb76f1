"""Models: shapes, reference parameter counts, init, frozen encoder, decoder noise augmentation, errors."""

from __future__ import annotations

import pytest
import torch

from unirae_pipeline.config.build import build
from unirae_pipeline.interop.encoder_weights import encoder_state
from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder, decoder_file, decoder_from_file
from unirae_pipeline.models.dit import DiTConfig, DiTDH, build_dit, dit_from_file
from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder
from unirae_pipeline.models.layers import Rope2D, count_params, sincos_pos_embed_2d, swiglu_hidden
from unirae_pipeline.models.serialization import ModelFile

from .conftest import ROOT


def dit_cfg(params: dict, **over) -> DiTConfig:
    return build(DiTConfig, {**params["dit"], **over}, "dit")


@pytest.mark.parametrize("size,expected", [("S", 196.5e6), ("B", 294.3e6), ("L", 621.7e6), ("XL", 838.7e6)])
def test_dit_dh_parameter_counts_match_reference(size, expected):
    from unirae_pipeline.tools.compose import compose_params

    cfg = build(DiTConfig, compose_params([f"dit={size}"], conf_dir=ROOT / "conf")["dit"], "dit")
    with torch.device("meta"):
        model = DiTDH(cfg, in_channels=768, input_size=16, num_classes=1000)
    total = count_params(model)  # pos_embed and the Fourier frequencies counted: frozen parameters, as the reference's
    assert abs(total - expected) / expected < 0.005


def test_dit_forward_shapes_and_zero_init(params):
    model = build_dit(dit_cfg(params), (64, 4, 4), 10, seed=0)
    x, t, y = torch.randn(3, 64, 4, 4), torch.rand(3), torch.tensor([0, 9, 10])
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised final layer: the untrained velocity is exactly 0
    for block in model.blocks:
        assert torch.count_nonzero(block.adaLN_modulation[-1].weight) == 0


def test_dit_seeded_build_and_file_roundtrip(params):
    a = build_dit(dit_cfg(params), (64, 4, 4), 10, seed=3)
    b = build_dit(dit_cfg(params), (64, 4, 4), 10, seed=3)
    c = build_dit(dit_cfg(params), (64, 4, 4), 10, seed=4)
    assert torch.equal(a.y_embedder.embedding_table.weight, b.y_embedder.embedding_table.weight)
    assert not torch.equal(a.y_embedder.embedding_table.weight, c.y_embedder.embedding_table.weight)
    with torch.no_grad():
        a.final_layer.linear.weight.normal_()
    back = dit_from_file(ModelFile.of("dit", a, config=a.cfg.to_dict(), latent_shape=[64, 4, 4], num_classes=10))
    x, t, y = torch.randn(2, 64, 4, 4), torch.rand(2), torch.tensor([1, 2])
    assert torch.allclose(a.eval()(x, t, y), back(x, t, y))


def test_label_dropout_only_in_training(params):
    model = build_dit(dit_cfg(params, class_dropout_prob=0.5), (64, 4, 4), 10, seed=0)
    y = torch.zeros(1000, dtype=torch.long)
    model.train()
    dropped = (model.drop_labels(y) == 10).float().mean()
    assert 0.4 < dropped < 0.6
    model.eval()
    assert torch.equal(model.drop_labels(y), y)


def test_swiglu_hidden_matches_reference_widths():
    assert [swiglu_hidden(d, 4.0) for d in (1152, 2048, 384, 768, 1024)] == [3072, 5461, 1024, 2048, 2730]


def test_rope_is_a_rotation_and_relative():
    rope = Rope2D(head_dim=16, grid=4)
    q, k = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16)
    assert torch.allclose(rope(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # Same q/k content at every token: scores depend only on the offset between positions.
    q1, k1 = q[:, :, :1].expand(1, 1, 16, 16), k[:, :, :1].expand(1, 1, 16, 16)
    scores = rope(q1) @ rope(k1).transpose(-1, -2)
    assert torch.allclose(scores[0, 0, 0, 1], scores[0, 0, 4, 5], atol=1e-5)  # (0,0)->(0,1) vs (1,0)->(1,1)


def test_sincos_table_shape_and_values():
    table = sincos_pos_embed_2d(8, 3)
    assert table.shape == (9, 8)
    assert torch.allclose(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))


def test_invalid_dit_params_are_named(params):
    with pytest.raises(ValueError, match="dit.hidden_size / dit.num_heads"):
        dit_cfg(params, hidden_size=130)
    with pytest.raises(ValueError, match=r"'dit.depht' is not a key of params.yaml \(did you mean dit.depth\?\)"):
        build(DiTConfig, {**params["dit"], "depht": 3}, "dit")


def encoder(params) -> FrozenEncoder:
    return FrozenEncoder(build(EncoderConfig, params["encoder"], "encoder"), seed=0)


def test_encoder_is_frozen_and_standardizes_tokens(params):
    enc = encoder(params)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.vit.training
    assert enc.vit.norm.weight is None  # affine-free final LayerNorm
    z = enc(torch.rand(4, 3, 16, 16))
    assert z.shape == (4, 64, 4, 4) == (4, *enc.latent_shape)
    assert torch.allclose(z.mean(1), torch.zeros(4, 4, 4), atol=1e-4)  # each token standardized over channels
    assert torch.allclose(z.var(1, unbiased=False), torch.ones(4, 4, 4), atol=1e-2)


def test_encoder_is_deterministic_and_drops_prefix_tokens(params):
    a, b = encoder(params), encoder(params)
    assert a.fingerprint() == b.fingerprint()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(a(x), b(x))
    assert a.num_prefix_tokens == 5  # CLS + 4 registers, as DINOv2-with-registers
    tokens = a.vit.forward_features((x - a.mean) / a.std)
    assert torch.allclose(a(x).flatten(2).transpose(1, 2), tokens[:, 5:])
    other = FrozenEncoder(build(EncoderConfig, params["encoder"], "encoder"), seed=1)
    assert other.fingerprint() != a.fingerprint()


def test_encoder_resizes_input_and_rejects_missing_weights(params, tmp_path):
    enc = encoder(params)
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, 64, 4, 4)
    with pytest.raises(FileNotFoundError, match="encoder.weights"):
        build(EncoderConfig, {**params["encoder"], "weights": str(tmp_path / "missing.safetensors")},
              "encoder").check_environment()


def test_encoder_loads_local_weights_file(params, tmp_path):
    from safetensors.torch import save_file

    src = encoder(params)
    state = {k: v.clone() for k, v in src.vit.state_dict().items()}
    state["norm.weight"], state["norm.bias"] = torch.ones(64), torch.zeros(64)  # a checkpoint with the affine norm
    save_file(state, str(tmp_path / "enc.safetensors"))
    cfg = build(EncoderConfig, {**params["encoder"], "weights": str(tmp_path / "enc.safetensors")}, "encoder")
    loaded = FrozenEncoder(cfg, 123, encoder_state(cfg))
    with pytest.raises(ValueError, match="takes its state dict exactly when"):
        FrozenEncoder(cfg, 123)  # a weights file named, but not read: constructors never open files
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded(x), src(x))


def test_decoder_shapes_noise_and_roundtrip(params):
    cfg = build(DecoderConfig, params["decoder"], "decoder")
    dec = ViTDecoder(cfg, 64, 4)
    z = torch.randn(2, 64, 4, 4)
    dec.eval()
    out = dec(z)
    assert out.shape == (2, 3, 16, 16)
    assert torch.equal(out, dec(z))  # no noise in eval mode
    dec.train()
    assert not torch.equal(dec(z), dec(z))  # noise augmentation in training
    assert torch.allclose(decoder_from_file(decoder_file(dec, "any"))(z), dec.eval()(z))
    with pytest.raises(ValueError, match="decoder expects latents"):
        dec(torch.randn(2, 32, 4, 4))


def test_decoder_noise_sigma_distributions(params):
    torch.manual_seed(0)
    for dist, expected_mean in (("uniform", 0.5), ("half_normal", (2 / torch.pi) ** 0.5)):
        cfg = build(DecoderConfig, {**params["decoder"], "noise_tau": 1.0, "noise_dist": dist}, "decoder")
        noise = ViTDecoder(cfg, 64, 4).add_noise(torch.zeros(4000, 1, 64))
        sigma = noise.std(dim=2).flatten()
        assert abs(sigma.mean() - expected_mean) < 0.05


def test_lightning_dit_option(params):
    from unirae_pipeline.models.dit import LightningDiT

    cfg = dit_cfg(params, head_depth=0)
    model = build_dit(cfg, (64, 4, 4), 10, seed=0)
    assert isinstance(model, LightningDiT) and not hasattr(model, "s_projector")
    x = torch.randn(2, 64, 4, 4)
    assert torch.count_nonzero(model(x, torch.rand(2), torch.tensor([1, 10]))) == 0  # zero-init output
    with torch.no_grad():
        model.final_layer.linear.weight.normal_()
    file = ModelFile.of("dit", model, config=cfg.to_dict(), latent_shape=[64, 4, 4], num_classes=10)
    assert isinstance(dit_from_file(file), LightningDiT)
    assert torch.allclose(dit_from_file(file)(x, torch.rand(2) * 0 + 0.5, torch.tensor([1, 2])),
                          model.eval()(x, torch.full((2,), 0.5), torch.tensor([1, 2])))


def test_lightning_dit_xl_parameter_count():
    from unirae_pipeline.tools.compose import compose_params

    cfg = build(DiTConfig, {**compose_params(["dit=XL"], conf_dir=ROOT / "conf")["dit"], "head_depth": 0}, "dit")
    with torch.device("meta"):
        model = build_dit(cfg, (768, 16, 16), 1000, seed=0)
    assert abs(count_params(model) - 677.2e6) / 677.2e6 < 0.005


@pytest.mark.parametrize("size", [32, 24])
def test_encoder_matches_the_reference_hf_dinov2(params, tmp_path, size):
    """A HF Dinov2WithRegistersModel (the reference RAE encoder) file loads into our timm encoder with equal
    outputs, at its native grid and through the position-embedding interpolation (tests/fixtures)."""
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(Path(__file__).parent / "fixtures" / "hf_dinov2_tiny.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        hf = json.loads(f.metadata()["config"])
    save_file({k[3:]: v for k, v in tensors.items() if k.startswith("hf.")}, str(tmp_path / "hf.safetensors"))
    overrides = {"patch_size": hf["patch_size"], "embed_dim": hf["hidden_size"], "depth": hf["num_hidden_layers"],
                 "num_heads": hf["num_attention_heads"]}
    cfg = EncoderConfig(params["encoder"]["model"], str(tmp_path / "hf.safetensors"), size, overrides)
    enc = FrozenEncoder(cfg, 0, encoder_state(cfg))
    # Our encoder takes [0, 1] images and normalizes them; the fixture fed normalized pixels to HF directly.
    images = tensors[f"images_{size}"] * enc.std + enc.mean
    ours = enc(images).flatten(2).transpose(1, 2)
    ref = tensors[f"tokens_{size}"]
    assert (ours - ref).abs().max() / ref.abs().max() < 1e-5
