"""The reference release's encoder families (DINOv2 with registers, SigLIP2, MAE) against their transformers
implementations, as the reference RAE runs them: diffusers' `AutoencoderRAE` builds them from config with the
reference's forward (token dropping, affine-free final norm, MAE's unshuffled full-visibility pass, position
tables resized to the input) and serves as the oracle. Random weights, nothing downloaded."""

from __future__ import annotations

import pytest
import torch
import yaml
from diffusers import AutoencoderRAE  # a dev dependency
from safetensors.torch import save_file

from unirae_pipeline.interop.encoder_weights import encoder_state
from unirae_pipeline.models.encoder import EncoderConfig, FrozenEncoder, family_of

WIDTH, HEADS, DEPTH, PATCH = 128, 2, 2, 4  # diffusers builds heads of 64 channels
# diffusers encoder_type -> our timm model and its overrides for the tiny transformers model (SigLIP's and MAE's
# configs keep the base MLP width, 3072, whatever the hidden size)
FAMILIES = {"dinov2": ("vit_small_patch14_reg4_dinov2", {}),
            "siglip2": ("vit_base_patch16_siglip_256.v2_webli", {"mlp_ratio": 3072 / WIDTH}),
            "mae": ("vit_base_patch16_224.mae", {"mlp_ratio": 3072 / WIDTH})}
# the reference's image processors (`AutoImageProcessor` of each hub model): SigLIP2 maps [0, 1] to [-1, 1]
PIXEL_NORM = {"dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
              "siglip2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
              "mae": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def random_rae(kind: str, input_size: int, seed: int = 0, **config):
    """diffusers' AutoencoderRAE of the family `kind` with every weight random (its init is too tame to exercise
    layer scale, positions and the norms)."""
    mean, std = PIXEL_NORM[kind]
    rae = AutoencoderRAE(encoder_type=kind, encoder_hidden_size=WIDTH, encoder_patch_size=PATCH,
                         encoder_num_hidden_layers=DEPTH, encoder_input_size=input_size,
                         encoder_norm_mean=list(mean), encoder_norm_std=list(std), **config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return rae.eval()


def our_encoder(kind: str, weights: str, input_size: int) -> FrozenEncoder:
    model, overrides = FAMILIES[kind]
    cfg = EncoderConfig(model, weights, input_size,
                        {"patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS, **overrides})
    return FrozenEncoder(cfg, 0, encoder_state(cfg))


def raw_tokens(rae, images: torch.Tensor) -> torch.Tensor:
    """The reference encoder's output (B, C, h, w): diffusers' latents without statistics are z / (1 + 1e-5)."""
    with torch.no_grad():
        return rae.encode(images).latent * (1 + 1e-5)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
@pytest.mark.parametrize("input_size", [16, 24])
def test_each_family_equals_its_transformers_implementation(kind, input_size, tmp_path):
    """The encoder's own file, as users have it (`save_pretrained`: the hub layout) and as transformers >= 5 holds
    it in memory, loads into our timm encoder with the reference's outputs, at input sizes whose grids need the
    position table resized (its native grid is 518/256/224 px over patch 4)."""
    rae = random_rae(kind, input_size)
    rae.encoder.save_pretrained(tmp_path / "hub")
    save_file({k: v.contiguous() for k, v in rae.encoder.state_dict().items()}, str(tmp_path / "memory.safetensors"))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = raw_tokens(rae, images)
    for weights in (tmp_path / "hub" / "model.safetensors", tmp_path / "memory.safetensors"):
        enc = our_encoder(kind, str(weights), input_size)
        assert enc.latent_shape == tuple(ref.shape[1:])
        assert (enc(images) - ref).abs().max() / ref.abs().max() < 1e-5, weights.name


def test_families_and_their_preprocessing():
    """The family (how positions are resized, the norms' eps) and the input normalization follow the model name;
    the built-in presets name the reference's encoders."""
    from unirae_pipeline.tools.compose import compose_params

    from .conftest import ROOT

    for kind, (model, _) in FAMILIES.items():
        assert EncoderConfig(model, "none", 224 if kind != "siglip2" else 256).pixel_norm == PIXEL_NORM[kind]
    assert family_of("vit_base_patch16_224.mae").layer_norm_eps == 1e-12  # ViTMAEConfig's, where timm uses 1e-6
    assert family_of("vit_base_patch16_224").name == "timm"
    presets = {"dinov2_b": ("vit_base_patch14_reg4_dinov2", 224, (768, 16, 16)),
               "dinov2_b_512": ("vit_base_patch14_reg4_dinov2", 448, (768, 32, 32)),
               "dinov3_b": ("vit_base_patch16_dinov3_qkvb.lvd1689m", 256, (768, 16, 16)),
               "siglip2_b": ("vit_base_patch16_siglip_256.v2_webli", 256, (768, 16, 16)),
               "mae_b": ("vit_base_patch16_224.mae", 256, (768, 16, 16))}
    for preset, (model, size, shape) in presets.items():
        enc = compose_params([f"encoder={preset}"], conf_dir=ROOT / "conf")["encoder"]
        cfg = EncoderConfig(**enc)
        assert (cfg.model, cfg.input_size, cfg.latent_shape) == (model, size, shape), preset


def test_dinov3_equals_its_transformers_implementation(tmp_path):
    """DINOv3 (not in the reference release): transformers' DINOv3ViTModel as the RAE recipe runs an encoder (CLS and
    4 registers dropped, affine-free final norm), in both weight layouts, against our timm encoder; rotary positions
    at two input sizes (no table to resize)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    hf = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=256, patch_size=PATCH, image_size=16, num_register_tokens=4))
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    hf.eval().save_pretrained(tmp_path / "hub")
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "memory.safetensors"))
    hf.norm.weight, hf.norm.bias = None, None  # the RAE's affine-free final norm
    for size in (16, 24):
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            ref = hf((images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                     / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)).last_hidden_state[:, 5:]
        for weights in (tmp_path / "hub" / "model.safetensors", tmp_path / "memory.safetensors"):
            cfg = EncoderConfig("vit_base_patch16_dinov3_qkvb.lvd1689m", str(weights), size,
                                {"patch_size": PATCH, "embed_dim": 64, "depth": 2, "num_heads": 4})
            ours = FrozenEncoder(cfg, 0, encoder_state(cfg))(images).flatten(2).transpose(1, 2)
            assert (ours - ref).abs().max() / ref.abs().max() < 1e-5, (size, weights.name)


def test_a_file_of_another_family_is_refused_naming_the_key(tmp_path):
    rae = random_rae("mae", 16)
    save_file({k: v.contiguous() for k, v in rae.encoder.state_dict().items()}, str(tmp_path / "mae.safetensors"))
    with pytest.raises(KeyError, match=r"encoder.weights .*mae.safetensors.*missing keys .*'reg_token'\]"):
        our_encoder("dinov2", str(tmp_path / "mae.safetensors"), 16)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_a_diffusers_rae_reads_as_encoder_decoder_and_statistics(kind, tmp_path):
    """A `save_pretrained` AutoencoderRAE folder: `encoder.weights` pointed at it, its decoder and statistics read
    apart, give diffusers' latents (its (z - mean) / (std + 1e-5) * scaling_factor, from our sqrt(var + eps)) and its
    images. On a 16x16 grid, the released models': diffusers scales its decoder's sin-cos positions by 16 / grid, where
    the reference (and this pipeline) does not, so other grids decode as the reference does, not as diffusers."""
    from unirae_pipeline.data.normalization import denormalize, normalize
    from unirae_pipeline.interop.diffusers import load_diffusers_decoder, load_diffusers_stats
    from unirae_pipeline.interop.diffusers_folder import DiffusersRAE

    gen = torch.Generator().manual_seed(2)
    shape = (WIDTH, 16, 16)
    rae = random_rae(kind, 64, decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                     decoder_intermediate_size=128, patch_size=4, latents_mean=torch.randn(shape, generator=gen),
                     latents_std=torch.rand(shape, generator=gen) + 0.5, scaling_factor=0.7)
    rae.save_pretrained(tmp_path / "rae")
    read = DiffusersRAE(tmp_path / "rae", "test")
    stats = load_diffusers_stats(read)
    images = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        ref_z = rae.encode(images).latent
        ref_x = rae.decode(ref_z).sample
    z = normalize(our_encoder(kind, str(tmp_path / "rae"), 64)(images), stats["mean"], stats["var"])
    assert (z - ref_z).abs().max() / ref_z.abs().max() < 1e-5
    with torch.no_grad():
        x = load_diffusers_decoder(read)(denormalize(ref_z, stats["mean"], stats["var"]))
    assert (x - ref_x).abs().max() / ref_x.abs().max() < 1e-5


def test_a_diffusers_rae_through_the_catalog(tmp_path):
    """`decoder` and `latent_stats` catalog entries of type DiffusersRAEDataset give the pipeline's decoder file (the
    SigLIP2 one de-normalizes with 0.5) and statistics; read-only; a folder that is not one is named."""
    from kedro.io import DatasetError

    from unirae_pipeline.io.official import DiffusersRAEDataset
    from unirae_pipeline.models.decoder import decoder_from_file

    rae = random_rae("siglip2", 16, decoder_hidden_size=64, decoder_num_hidden_layers=1,
                     decoder_num_attention_heads=4, decoder_intermediate_size=128, patch_size=4)
    rae.save_pretrained(tmp_path / "rae")
    decoder = decoder_from_file(DiffusersRAEDataset(filepath=str(tmp_path / "rae"), kind="decoder").load())
    assert decoder.pixel_norm == PIXEL_NORM["siglip2"] and decoder.latent_dim == WIDTH and decoder.image_size == 16
    file = DiffusersRAEDataset(filepath=str(tmp_path / "rae"), kind="stats").load()
    stats = file.expect("stats").tensors
    assert stats["mean"].shape == stats["var"].shape == (WIDTH, 4, 4) and not stats["mean"].any()
    with pytest.raises(DatasetError, match="does not overwrite"):
        DiffusersRAEDataset(filepath=str(tmp_path / "rae"), kind="stats").save(file)
    with pytest.raises(DatasetError, match="is not a diffusers AutoencoderRAE folder"):
        DiffusersRAEDataset(filepath=str(tmp_path), kind="decoder").load()


@pytest.mark.parametrize("kind", sorted(FAMILIES))
@pytest.mark.parametrize("source", ["hub", "timm"])
def test_export_to_diffusers_round_trips(kind, source, tmp_path):
    """`export_diffusers`: a diffusers RAE read by this pipeline (its encoder file as users have it, or that file in
    timm's layout; its decoder and statistics converted) and exported again loads in diffusers' own class with the
    same latents and images, to 1e-5."""
    from unirae_pipeline.fileio import write_safetensors
    from unirae_pipeline.interop.diffusers import load_diffusers_decoder, load_diffusers_stats
    from unirae_pipeline.interop.diffusers_folder import DiffusersRAE
    from unirae_pipeline.interop.hf_encoders import hf_to_timm
    from unirae_pipeline.io.datasets import ModelFileDataset
    from unirae_pipeline.models.decoder import decoder_file
    from unirae_pipeline.tools.export_diffusers import main as export

    gen = torch.Generator().manual_seed(3)
    shape = (WIDTH, 16, 16)
    rae = random_rae(kind, 64, decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                     decoder_intermediate_size=128, patch_size=4, latents_mean=torch.randn(shape, generator=gen),
                     latents_std=torch.rand(shape, generator=gen) + 0.5)
    rae.save_pretrained(tmp_path / "a")
    rae.encoder.save_pretrained(tmp_path / "enc")
    weights = tmp_path / "enc" / "model.safetensors"
    if source == "timm":
        from safetensors.torch import load_file

        save_file({k: v.contiguous() for k, v in hf_to_timm(load_file(str(weights))).items()},
                  str(tmp_path / "timm.safetensors"))
        weights = tmp_path / "timm.safetensors"
    read = DiffusersRAE(tmp_path / "a", "test")
    ModelFileDataset(filepath=str(tmp_path / "decoder.safetensors"), kind="decoder").save(
        decoder_file(load_diffusers_decoder(read), "x"))
    write_safetensors(tmp_path / "stats.safetensors", load_diffusers_stats(read), {})
    model, overrides = FAMILIES[kind]
    encoder = {"model": model, "weights": str(weights), "input_size": 64,
               "overrides": {"patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS, **overrides}}
    params = {"encoder": encoder, "diffusion": {"latent_norm": "mean_var"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert export([str(tmp_path / "b"), "--params", str(tmp_path / "params.yaml"), "--decoder",
                   str(tmp_path / "decoder.safetensors"), "--stats", str(tmp_path / "stats.safetensors")]) == 0
    back = AutoencoderRAE.from_pretrained(tmp_path / "b").eval()
    images = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        z, z_back = rae.encode(images).latent, back.encode(images).latent
        x, x_back = rae.decode(z).sample, back.decode(z).sample
    assert (z_back - z).abs().max() / z.abs().max() < 1e-5
    assert (x_back - x).abs().max() / x.abs().max() < 1e-5


def test_export_refuses_what_diffusers_cannot_hold(tmp_path, capsys):
    """Named errors: weights without their original table (`hub`), a family diffusers lacks (DINOv3), a grid on
    which diffusers' decoder positions depart from the reference's."""
    from unirae_pipeline.fileio import write_safetensors
    from unirae_pipeline.io.datasets import ModelFileDataset
    from unirae_pipeline.models.decoder import DecoderConfig, ViTDecoder, decoder_file
    from unirae_pipeline.tools.export_diffusers import main as export

    write_safetensors(tmp_path / "stats.safetensors", {"mean": torch.zeros(1), "var": torch.ones(1)}, {})
    for name, (model, size, grid) in {"hub": ("vit_base_patch16_224.mae", 64, 16),
                                       "dinov3": ("vit_base_patch16_dinov3_qkvb.lvd1689m", 64, 16),
                                       "grid": ("vit_base_patch16_224.mae", 32, 8)}.items():
        weights = "hub" if name == "hub" else str(tmp_path / "stats.safetensors")
        encoder = {"model": model, "weights": weights, "input_size": size,
                   "overrides": {"patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"encoder": encoder}), encoding="utf-8")
        decoder = ViTDecoder(DecoderConfig(64, 1, 4, 128, 4, 0.0, "uniform"), WIDTH, grid)
        ModelFileDataset(filepath=str(tmp_path / "decoder.safetensors"), kind="decoder").save(
            decoder_file(decoder, "x"))
        assert export([str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml"), "--decoder",
                       str(tmp_path / "decoder.safetensors"), "--stats", str(tmp_path / "stats.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "needs the weights as a local file" in err and "has no dinov3 encoder" in err
    assert "the latent grid is 8x8" in err and not (tmp_path / "out").exists()
