"""Official checkpoints: our converters reproduce the official modules' outputs (bytetriper/RAE@a4d18c4).

The fixture holds random weights, inputs and outputs of small official DiTwDDTHead and GeneralDecoder modules,
made by tests/fixtures/make_official_fixtures.py from the official code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from unirae_pipeline.interop.official import (
    load_official_decoder,
    load_official_dit,
    load_official_stats,
    read_checkpoint,
)

from .conftest import scratch, typed

FIXTURE = Path(__file__).parent / "fixtures" / "official_tiny.safetensors"


def read_fixture() -> tuple[dict, dict, dict, dict]:
    """(all tensors, the modules' kwargs, the DiT state, the decoder state) of the official-code fixture."""
    with safe_open(str(FIXTURE), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = {k: json.loads(v) for k, v in f.metadata().items() if k != "source"}
    part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    return tensors, meta, part("dit."), part("decoder.")


@pytest.fixture(scope="module")
def official():
    return read_fixture()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_dit_dh_matches_the_official_model(official):
    tensors, meta, dit_state, _ = official
    model = load_official_dit(dit_state, **meta["dit"])
    with torch.no_grad():
        out = model(tensors["dit_in.x"], tensors["dit_in.t"], tensors["dit_in.y"])
    assert rel_err(out, tensors["dit_out"]) < 1e-5
    assert model.cfg.head_hidden_size == 96 and model.cfg.depth == 2 and model.cfg.fourier_features == 256


def test_decoder_matches_the_official_model(official):
    tensors, meta, _, decoder_state = official
    model = load_official_decoder(decoder_state, **meta["decoder"])
    with torch.no_grad():
        out = model(tensors["decoder_in"])
    assert rel_err(out, tensors["decoder_out"]) < 1e-5


def test_compile_and_ddp_prefixes_are_accepted(official):
    tensors, meta, dit_state, _ = official
    wrapped = {f"module._orig_mod.{k}": v for k, v in dit_state.items()}
    model = load_official_dit(wrapped, **meta["dit"])
    with torch.no_grad():
        assert rel_err(model(tensors["dit_in.x"], tensors["dit_in.t"], tensors["dit_in.y"]), tensors["dit_out"]) < 1e-5


def test_unknown_missing_and_unsupported_are_clear_errors(official):
    _, meta, dit_state, decoder_state = official
    with pytest.raises(KeyError, match="unknown keys \\['extra.weight'\\]"):
        load_official_dit({**dit_state, "extra.weight": torch.zeros(1)}, **meta["dit"])
    incomplete = {k: v for k, v in dit_state.items() if k != "final_layer.linear.bias"}
    with pytest.raises(KeyError, match="missing keys \\['final_layer.linear.bias'\\]"):
        load_official_dit(incomplete, **meta["dit"])
    with pytest.raises(ValueError, match="use_qknorm"):
        load_official_dit(dit_state, **{**meta["dit"], "use_qknorm": True})
    with pytest.raises(ValueError, match="shape mismatch|differs"):
        load_official_dit(dit_state, **{**meta["dit"], "in_channels": 16})
    with pytest.raises(KeyError, match="official decoder"):
        load_official_decoder({k: v for k, v in decoder_state.items() if "decoder_pred" not in k}, **meta["decoder"])


def test_stats_var_only_and_full(tmp_path):
    var = torch.rand(8, 2, 2)
    stats = load_official_stats({"mean": None, "var": var})
    assert torch.equal(stats["mean"], torch.zeros(8, 2, 2)) and torch.equal(stats["var"], var)
    mean = torch.randn(8, 2, 2)
    assert torch.equal(load_official_stats({"mean": mean, "var": var})["mean"], mean)
    with pytest.raises(KeyError, match="var"):
        load_official_stats({"mean": mean})
    torch.save({"mean": None, "var": var}, tmp_path / "stat.pt")
    assert torch.equal(load_official_stats(read_checkpoint(tmp_path / "stat.pt"))["var"], var)


def test_read_checkpoint_prefers_ema_and_rejects_missing_files(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "ema": {"w": torch.ones(1)}}, tmp_path / "ckpt.pt")
    assert torch.equal(read_checkpoint(tmp_path / "ckpt.pt")["w"], torch.ones(1))
    with pytest.raises(FileNotFoundError, match="missing.pt.*not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_sampling_with_official_checkpoints_through_the_catalog(official, tmp_path):
    """The official-weights profile: catalog entries of type OfficialModelDataset feed the sample node."""
    from unirae_pipeline.io.official import OfficialModelDataset
    from unirae_pipeline.pipelines.sample.nodes import sample

    _, meta, dit_state, decoder_state = official
    torch.save({"ema": dit_state, "model": {}}, tmp_path / "dit.pt")
    torch.save(decoder_state, tmp_path / "decoder.pt")
    torch.save({"mean": None, "var": torch.rand(32, 4, 4) + 0.5}, tmp_path / "stat.pt")
    dit = OfficialModelDataset(filepath=str(tmp_path / "dit.pt"), kind="dit", params=meta["dit"]).load()
    decoder = OfficialModelDataset(filepath=str(tmp_path / "decoder.pt"), kind="decoder", params=meta["decoder"]).load()
    stats = OfficialModelDataset(filepath=str(tmp_path / "stat.pt"), kind="stats").load()
    params = typed("sample", {"num_per_class": 2, "batch_size": 8, "shard_size": 8, "grid_per_class": 2,
                              "precision": "bf16", "untrained_baseline": False,
                              "sampler": {"method": "euler", "num_steps": 4, "guidance": "cfg", "guidance_scale": 1.5,
                                          "guidance_t_min": 0.0, "guidance_t_max": 1.0, "sde_norm": 1.0,
                                          "ig_scale": 1.0, "ig_t_min": 0.0, "ig_t_max": 1.0}})
    diffusion = typed("diffusion", {"time_dist": "uniform", "shift_base": 4096, "logit_mean": 0.0, "logit_std": 1.0,
                                    "latent_norm": "var"})
    samples, baseline, grid = sample(dit, None, dit, decoder, stats, params, diffusion, 0, scratch(tmp_path))
    images = np.concatenate(list(samples.chunks(64)))
    assert images.shape == (20, 16, 16, 3) and sorted(set(samples.labels.tolist())) == list(range(10))
    assert len(samples.parts) == 3 and len(baseline) == 0  # shards of 8; no untrained twin unless asked for
    with pytest.raises(Exception, match="does not overwrite"):
        OfficialModelDataset(filepath=str(tmp_path / "dit.pt"), kind="dit").save(dit)
