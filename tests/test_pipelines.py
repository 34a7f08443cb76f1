"""Kedro pipelines on an in-memory catalog (the smoke profile): every node runs, outputs are well formed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from unirae_pipeline.config.params import Params, load_params
from unirae_pipeline.evaluation.report import grid_labels
from unirae_pipeline.io.image_set import ImageSetDataset
from unirae_pipeline.io.latent_store import LatentStoreDataset
from unirae_pipeline.pipelines import (
    cache_latents,
    evaluate,
    fid_reference,
    latent_stats,
    prepare_data,
    sample,
    train_dit,
    train_guide,
    train_rae,
)
from unirae_pipeline.tools.compose import compose_params, dump

from .conftest import ROOT, scratch, typed


class KeptDataset(MemoryDataset):
    """A MemoryDataset that the runner cannot release, so that the tests can read intermediate outputs."""

    def _release(self) -> None:
        """Keep the data: releasing is what makes a plain MemoryDataset empty after its last consumer."""


def _catalog(tmp_path, params: Params, inputs: set[str]) -> DataCatalog:
    """Only the two folder-shaped artefacts need a disk; everything else stays in memory. The params inputs hold what
    the project's hook hands the nodes under `kedro run`: the typed tree's values."""
    catalog = DataCatalog({"image_set": ImageSetDataset(filepath=str(tmp_path / "image_set")),
                           "latents": LatentStoreDataset(filepath=str(tmp_path / "latents"))})
    for name in inputs:
        if name.startswith("params:"):
            catalog[name] = KeptDataset(params.get(name.removeprefix("params:")))
    return catalog


def run_chain(tmp, overrides: list[str]) -> tuple[Params, DataCatalog, dict]:
    """Every stage, in order, on the composed `overrides`: the params, the catalog and every in-memory output."""
    params = load_params(compose_params(overrides, conf_dir=ROOT / "conf"))
    slices = [m.create_pipeline() for m in (prepare_data, cache_latents, latent_stats, fid_reference, train_rae,
                                            train_dit, train_guide, sample, evaluate)]
    catalog = _catalog(tmp, params, {name for pipe in slices for name in pipe.inputs()})
    memory = {name for pipe in slices for name in pipe.all_outputs()} - {"image_set", "latents"}
    for name in memory:
        catalog[name] = KeptDataset()
    for pipe in slices:  # stage by stage, as `dvc repro` runs them
        SequentialRunner().run(pipe, catalog)
    return params, catalog, {name: catalog.load(name) for name in memory}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return run_chain(tmp_path_factory.mktemp("chain"), ["profile=smoke"])


@pytest.mark.slow
def test_the_chain_at_twice_the_resolution(tmp_path):
    """profile=imagenet512's code path at tiny scale: images at twice the embedded default's size, resized down for
    the encoder (as 512 px to 448), a latent grid twice as wide (8x8: four times the DiT's tokens) and the decoder's
    patches drawing the full size; every stage runs and its outputs have those shapes."""
    twice = ["profile=smoke", "data.image_size=32", "encoder.overrides.patch_size=2"]
    params, catalog, out = run_chain(tmp_path, twice)
    default = load_params(compose_params(["profile=smoke"], conf_dir=ROOT / "conf"))
    assert params.encoder.input_size < params.data.image_size == 2 * default.data.image_size
    assert catalog.load("latents").manifest["latent_shape"] == [64, 8, 8] == [64, *(2 * g for g in
                                                                                   default.encoder.latent_shape[1:])]
    images = np.concatenate(list(out["samples"].chunks(64)))
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert np.isfinite(out["metrics"]["fd"]) and 0 <= out["metrics"]["class_accuracy"] <= 1
    assert np.isfinite(out["rae_metrics"]["psnr"]) and out["reconstructions"].size[0] > 8 * 32  # 20 steps: no quality


@pytest.mark.slow
def test_the_raev2_method_learns_on_the_embedded_default(tmp_path):
    """The README's `dvc exp run -S method=raev2`, every stage at the embedded default's full size: RAEv2's DiT
    trained by its two-head x-prediction loss and Muon, sampled with internal guidance on its grid, decoded by a
    decoder whose output is the image, from unmirrored latents; its samples learn the classes as RAE's default does
    (class accuracy >= 0.8, FD at most a third of the untrained twin's)."""
    from unirae_pipeline.models.decoder import IDENTITY_NORM, decoder_from_file

    params, catalog, out = run_chain(tmp_path, ["method=raev2"])
    assert params.dit.arch == "raev2" and params.train_dit.muon is not None and params.sample.sampler.ig_scale > 1
    assert out["dit"].meta["config"]["arch"] == "raev2"
    assert decoder_from_file(out["decoder"]).pixel_norm == IDENTITY_NORM
    assert catalog.load("latents").manifest["splits"]["train"]["count"] == 6000  # no mirrored copies
    assert {"loss_full", "loss_base"} <= set(out["dit_loss"].columns)
    metrics = out["metrics"]
    assert metrics["class_accuracy"] >= 0.8 and metrics["fd"] <= metrics["fd_untrained"] / 3, metrics


@pytest.mark.slow
def test_your_own_images_with_the_readme_command(tmp_path):
    """The README's `data=folder` line, its root a small folder of 40 px images in two classes, on the smoke profile
    (which composes with data=folder: training stages cut to seconds, the folder kept): every stage runs on 16 px
    centre crops of those images, unmirrored (the folder preset's default), each training stage's batch fitted to the
    40 training images (smoke's 64 halved to 8: 5 batches per epoch, 8 x the steps). The same line with fixed
    batches is refused by `check_params`, naming the key and fit_batch."""
    import shlex
    import subprocess
    import sys

    from .conftest import write_folder

    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if "-S data=folder" in line]
    tokens = shlex.split(line)
    overrides = [tokens[i + 1] for i, t in enumerate(tokens) if t == "-S"]
    assert overrides == ["data=folder", "data.root=/path/to/images"]  # nothing else to pick
    root = write_folder(tmp_path / "images", {"cat": 20, "dog": 20}, size=40)
    for extra in [f for f in (root / "val").rglob("*.png") if int(f.stem) >= 3]:
        extra.unlink()  # 6 val images: fewer than the 16 that train_rae's grid shows (it failed after training)
    overrides = [o.replace("/path/to/images", str(root)) for o in overrides]
    params, catalog, out = run_chain(tmp_path / "run", ["profile=smoke", *overrides])  # the smoke profile keeps them
    assert catalog.load("image_set").class_names == ["cat", "dog"] and params.data.root == str(root)
    assert catalog.load("latents").manifest["splits"]["train"]["count"] == 40 and not params.latents.hflip
    assert params.train_dit.batch_size == 64 and params.train_dit.duration == 20
    assert out["dit_loss"]["step"].max() == 8 * 20 == out["rae_loss"]["step"].max()
    assert np.concatenate(list(out["samples"].chunks(64))).shape == (2 * 4, 16, 16, 3)
    assert grid_labels(out["reconstructions"]) == ["original", "decoded"]  # one pair of rows of 6
    work = tmp_path / "check"
    work.mkdir()
    fixed = compose_params([*overrides, "train_rae.fit_batch=false", "train_dit.fit_batch=false",
                            "fid.train.fit_batch=false"], conf_dir=ROOT / "conf")
    (work / "params.yaml").write_text(dump(fixed), encoding="utf-8")
    refused = subprocess.run([sys.executable, "-m", "unirae_pipeline.config", str(work / "marker.txt")], cwd=work,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and not (work / "marker.txt").exists()
    assert "exceeds the 40 training images" in refused.stderr and "fit_batch=true" in refused.stderr


def test_latent_cache_holds_train_plain_and_flipped_plus_val(chain):
    params, catalog, _ = chain
    store = catalog.load("latents")
    shapes = params.data.shapes
    manifest = store.manifest
    assert manifest["splits"]["train"]["count"] == 2 * 10 * shapes.train_per_class
    assert manifest["splits"]["val"]["count"] == 10 * shapes.val_per_class
    assert manifest["latent_shape"] == [64, 4, 4] and len(manifest["fingerprint"]) == 16
    train = store.load("train")
    assert train["flip"].sum() == 10 * shapes.train_per_class


def test_stats_match_the_cached_latents(chain):
    _, catalog, outputs = chain
    z = catalog.load("latents").load("train")["latents"].double()
    tensors = outputs["latent_stats"].tensors
    assert np.allclose(tensors["mean"].numpy(), z.mean(0).numpy(), atol=1e-5)
    assert np.allclose(tensors["var"].numpy(), z.var(0, unbiased=False).numpy(), atol=1e-5)


def test_samples_are_class_balanced_uint8(chain):
    params, _, outputs = chain
    samples = outputs["samples"]
    n = params.sample.num_per_class
    images = np.concatenate(list(samples.chunks(1000)))
    assert images.shape == (10 * n, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(samples.labels).tolist() == [n] * 10
    assert len(outputs["samples_untrained"]) == len(samples)


def test_metrics_and_reports(chain):
    _, catalog, outputs = chain
    metrics = outputs["metrics"]
    assert set(metrics) >= {"class_accuracy", "fd", "fd_untrained", "fd_ratio"}
    assert 0 <= metrics["class_accuracy"] <= 1 and metrics["fd"] >= 0
    assert set(outputs["rae_metrics"]) == {"psnr", "ssim", "recon_fd", "recon_accuracy"}
    # 40 samples: too few for precision/recall (1.0 for any model), which the metrics say instead of a number
    assert not {"precision", "recall"} & set(metrics) and metrics["precision_recall"] == "too few images (40 < 500)"
    assert list(outputs["dit_loss"].columns) == ["step", "loss", "lr"]
    assert outputs["sample_grid"].size[0] >= 512 and outputs["reconstructions"].size[0] >= 512
    names = catalog.load("latents").manifest["class_names"]  # rows in label order: class folders sorted by name
    assert grid_labels(outputs["sample_grid"]) == [f"{k} {name}" for k, name in enumerate(names)]
    assert names == sorted(names) and grid_labels(outputs["reconstructions"]) == ["original", "decoded"] * 2


def test_sample_refuses_artefacts_of_another_encoder(chain):
    from unirae_pipeline.pipelines.sample.nodes import sample as sample_node

    params, _, outputs = chain
    forged = replace(outputs["decoder"], meta={**outputs["decoder"].meta, "fingerprint": "0000000000000000"})
    with pytest.raises(ValueError, match="fingerprints differ"):
        sample_node(outputs["dit"], outputs["dit_snapshot"], outputs["dit_guide"], forged, outputs["latent_stats"],
                    params.sample, params.diffusion, 0, params.runtime)


def test_non_finite_samples_and_reconstructions_are_never_written(chain, tmp_path):
    """A decoder that gives NaN (one bias of its last layer) would quantize to black pixels, written and scored as a
    result: sampling and stage 1's evaluation stop instead, with the count, and no sample shard is written."""
    from unirae_pipeline.pipelines.sample import nodes
    from unirae_pipeline.pipelines.train_rae.nodes import evaluate_rae

    params, catalog, outputs = chain
    tensors = dict(outputs["decoder"].tensors)
    last = [k for k in tensors if k.endswith(".bias")][-1]
    tensors[last] = torch.full_like(tensors[last], float("nan"))
    broken = replace(outputs["decoder"], tensors=tensors)
    inputs = list(_sample_inputs(chain, tmp_path, num_per_class=2, batch_size=4, shard_size=8))
    inputs[3] = broken
    with pytest.raises(FloatingPointError, match=r"sample: batch 0: [\d,]+ of [\d,]+ decoded values are NaN or Inf"):
        nodes.sample(*inputs)
    assert not list(tmp_path.rglob("shard_*.npy"))
    with pytest.raises(FloatingPointError, match="reconstructions from image 0: .* NaN or Inf"):
        evaluate_rae(broken, catalog.load("latents"), catalog.load("image_set"), outputs["feature_extractor"],
                     outputs["reference_stats"], False, params.runtime)


def test_autoguidance_uses_the_guide_snapshot(chain):
    """With guide.source: snapshot (the default) train_guide trains nothing and the guide is train_dit's EMA at
    guide_at."""
    from unirae_pipeline.pipelines.sample.nodes import sample as sample_node

    params, _, outputs = chain
    assert params.guide.source == "snapshot" and outputs["dit_guide"].empty
    guide_meta = outputs["dit_snapshot"].encode()
    assert guide_meta["step"] == str(params.train_dit.guide_at)
    assert not all(torch.equal(outputs["dit"].tensors[k], outputs["dit_snapshot"].tensors[k])
                   for k in outputs["dit"].tensors)
    guided, _, _ = sample_node(outputs["dit"], outputs["dit_snapshot"], outputs["dit_guide"], outputs["decoder"],
                               outputs["latent_stats"], _autoguided(params), params.diffusion, 0, params.runtime)
    first, guided_first = next(outputs["samples"].chunks(1000)), next(guided.chunks(1000))
    assert guided_first.shape == first.shape
    assert not np.array_equal(guided_first, first)  # the guide changed the samples


def _autoguided(params: Params):
    """The `sample` group of the chain, AutoGuidance on at scale 2, no untrained floor."""
    return replace(params.sample, untrained_baseline=False,
                   sampler=replace(params.sample.sampler, guidance="autoguidance", guidance_scale=2.0))


def test_train_guide_trains_a_separate_smaller_dit_that_autoguidance_uses(chain):
    """guide=tiny: train_guide trains its own, narrower DiT-DH for guide.duration steps by the main run's recipe, and
    AutoGuidance then takes it instead of train_dit's snapshot."""
    from unirae_pipeline.config.guide import RECIPE
    from unirae_pipeline.pipelines.sample.nodes import sample as sample_node
    from unirae_pipeline.pipelines.train_guide.nodes import train_guide

    params, catalog, outputs = chain
    guide = {**compose_params(["guide=tiny"], conf_dir=ROOT / "conf")["guide"], "duration": 6}
    cfg = typed("guide", guide)
    recipe = cfg.recipe(**{k: getattr(params.train_dit, k) for k in RECIPE})
    assert (recipe.duration, recipe.lr, recipe.batch_size) == (6, params.train_dit.lr, params.train_dit.batch_size)
    file = train_guide(catalog.load("latents"), outputs["latent_stats"], cfg, params.diffusion, params.trainer,
                       params.seed, params.runtime, **{k: getattr(params.train_dit, k) for k in RECIPE})
    meta = file.meta
    assert (meta["config"]["hidden_size"], meta["config"]["depth"], meta["step"], meta["source"]) == (64, 2, 6, "train")
    assert meta["fingerprint"] == outputs["dit"].meta["fingerprint"]
    inputs = outputs["decoder"], outputs["latent_stats"], _autoguided(params), params.diffusion, 0, params.runtime
    trained, _, _ = sample_node(outputs["dit"], None, file, *inputs)  # no snapshot needed (as with a released guide)
    snapshot, _, _ = sample_node(outputs["dit"], outputs["dit_snapshot"], outputs["dit_guide"], *inputs)
    assert not np.array_equal(next(trained.chunks(1000)), next(snapshot.chunks(1000)))
    with pytest.raises(ValueError, match="no guide"):
        sample_node(outputs["dit"], None, outputs["dit_guide"], *inputs)
    with pytest.raises(ValueError, match="guide.duration"):
        typed("guide", {**guide, "duration": 0})


def test_train_rae_reference_recipe_from_images(chain, tmp_path):
    """The stage-1 recipe end to end through the node: online encoder on random crops, LPIPS from the start, the
    discriminator training from step 4 and reaching the decoder from step 6 (random-init weights files)."""
    from unirae_pipeline.pipelines.train_rae.nodes import evaluate_rae, train_rae

    from .test_train_rae import LPIPS_HEADS, TINY_DINO, write_random_weights

    params, catalog, outputs = chain
    weights = write_random_weights(tmp_path)
    recipe = replace(params.train_rae, source="images", resize_ratio=1.25, duration=10, warmup=2, batch_size=16,
                     lpips_weight=1.0, gan_weight=0.75, disc_upd_start=4, disc_start=6,
                     lpips=replace(params.train_rae.lpips, vgg_weights=weights["vgg"], heads_weights=LPIPS_HEADS),
                     disc=replace(params.train_rae.disc, weights=weights["dino"], input_size=32, key_depths=(1, 2),
                                  kernel_size=3, overrides=TINY_DINO))
    latents, image_set = catalog.load("latents"), catalog.load("image_set")
    trainer, run = params.trainer, replace(params.runtime, log_every_n_steps=1)
    decoder, curve = train_rae(latents, image_set, params.encoder, params.decoder, recipe, trainer, params.seed, run)
    assert len(curve) == 10 and {"l1", "lpips", "gan", "gan_weight", "disc", "disc_accuracy"} <= set(curve.columns)
    assert curve.loc[curve.step > 6, "gan"].notna().all() and curve.loc[curve.step <= 4, "disc"].isna().all()
    metrics, _ = evaluate_rae(decoder, latents, image_set, outputs["feature_extractor"], outputs["reference_stats"],
                                  False, run)
    assert set(metrics) == {"psnr", "ssim", "recon_fd", "recon_accuracy"}
    centre = replace(recipe, resize_ratio=None, duration=2, warmup=0, gan_weight=0.0, lpips_weight=0.0)
    assert len(train_rae(latents, image_set, params.encoder, params.decoder, centre, trainer, params.seed, run)[1]) == 2
    # the online encoder must be the one that made the cache
    with pytest.raises(ValueError, match="fingerprints differ"):
        train_rae(latents, image_set, replace(params.encoder, overrides={**params.encoder.overrides, "depth": 1}),
                      params.decoder, recipe, trainer, params.seed, run)
    with pytest.raises(ValueError, match="16-mixed with train_rae.gan_weight"):
        train_rae(latents, image_set, params.encoder, params.decoder, recipe,
                      replace(trainer, precision="16-mixed"), params.seed, run)


def _sample_inputs(chain, folder: Path, compile: bool = False, **sample: object) -> tuple:
    """The sample node's inputs from the chain's artefacts, with these `sample` params and scratch space in
    `folder`."""
    params, _, outputs = chain
    return (outputs["dit"], outputs["dit_snapshot"], outputs["dit_guide"], outputs["decoder"], outputs["latent_stats"],
            replace(params.sample, **sample), params.diffusion, 0, scratch(folder, compile=compile))


def test_compiled_sampling_equals_eager(chain, tmp_path):
    """`runtime.compile` traces the DiT once per run (one graph per batch shape) and changes no sample beyond float
    rounding: at most one uint8 level, in a handful of pixels."""
    from unirae_pipeline.pipelines.sample import nodes

    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        samples, _, _ = nodes.sample(*_sample_inputs(chain, tmp_path / str(compiled), compiled, num_per_class=3,
                                                     batch_size=4, shard_size=8, untrained_baseline=False))
        runs[compiled] = np.concatenate(list(samples.chunks(100))).astype(int)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did run compiled
    diff = np.abs(runs[True] - runs[False])
    assert runs[True].shape == runs[False].shape and diff.max() <= 1 and diff.mean() < 0.01


def test_sampling_splits_its_shards_across_ranks(chain, tmp_path, monkeypatch):
    """Under torchrun/SLURM rank r makes shards r, r + world, ...; rank zero waits for the rest and returns the whole
    set, equal to a one-process run (the untrained floor too). Ranks run one after the other here."""
    from unirae_pipeline.pipelines.sample import nodes

    alone = nodes.sample(*_sample_inputs(chain, tmp_path / "one", num_per_class=6, batch_size=10, shard_size=20,
                                         untrained_baseline=True))
    inputs = _sample_inputs(chain, tmp_path / "two", num_per_class=6, batch_size=10, shard_size=20,
                            untrained_baseline=True)
    real, made = nodes.generate, []
    monkeypatch.setattr(nodes, "generate", lambda *a, **k: made.append(a[-1]) or real(*a, **k))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    other = nodes.sample(*inputs)
    assert made == [2, 2] and len(other[0]) == len(other[1]) == 0  # shard 1 (first batch 2) of samples and floor
    monkeypatch.setenv("RANK", "0")
    samples, floor, grid = nodes.sample(*inputs)
    assert made == [2, 2, 0, 4, 0, 4]  # rank zero: shards 0 and 2 of each
    for mine, single in zip((samples, floor), alone[:2]):
        assert np.array_equal(mine.labels, single.labels)
        assert all(np.array_equal(a, b) for a, b in zip(mine.chunks(20), single.chunks(20)))
    assert np.array_equal(np.asarray(grid), np.asarray(alone[2]))


def test_sampling_resumes_from_complete_shards_and_exports_the_adm_npz(chain, tmp_path, monkeypatch):
    """A run killed after its first shard keeps it; the rerun (other runtime settings) makes only the rest and equals
    an unbroken run. The
    catalog writes np.savez's layout (arr_0 uint8 NHWC, arr_1 labels), read back memory-mapped."""
    from unirae_pipeline.io.samples import SamplesDataset
    from unirae_pipeline.pipelines.sample import nodes

    unbroken, _, grid = nodes.sample(*_sample_inputs(chain, tmp_path / "unbroken", num_per_class=6, batch_size=10,
                                                     shard_size=20, untrained_baseline=False))
    assert [len(p) for p in unbroken.parts] == [20, 20, 20]

    inputs = _sample_inputs(chain, tmp_path / "killed", num_per_class=6, batch_size=10, shard_size=20,
                            untrained_baseline=False)
    real, calls = nodes.generate, []

    def dies_after_one_shard(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(kwargs.get("first_batch", args[-1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(nodes, "generate", dies_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        nodes.sample(*inputs)
    monkeypatch.setattr(nodes, "generate", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
    other_runtime = replace(inputs[-1], num_workers=2, log_every_n_steps=7)  # in no resume key
    resumed, _, grid_again = nodes.sample(*inputs[:-1], other_runtime)
    assert calls == [0, 2, 4]  # first batches of shards 0 (before the kill), 1 and 2 (after): shard 0 was kept
    assert all(np.array_equal(a, b) for a, b in zip(unbroken.chunks(20), resumed.chunks(20)))
    assert np.array_equal(np.asarray(grid), np.asarray(grid_again))

    dataset = SamplesDataset(filepath=str(tmp_path / "samples.npz"))
    dataset.save(resumed)
    assert not resumed.cache.exists()  # shards removed once the npz is complete
    with np.load(tmp_path / "samples.npz") as npz:
        assert npz.files == ["arr_0", "arr_1", "unirae.sha256"] and npz["arr_0"].dtype == np.uint8  # ADM + checksum
        assert np.array_equal(npz["arr_0"], np.concatenate(list(unbroken.chunks(60))))
        assert np.array_equal(npz["arr_1"], unbroken.labels)
    loaded = dataset.load()
    assert isinstance(loaded.parts[0], np.memmap) and np.array_equal(loaded.labels, unbroken.labels)
    with pytest.raises(ValueError, match="multiple of sample.batch_size"):
        replace(inputs[5], shard_size=25)
