"""Data: the built-in set, ImageFolder indexing and its errors, latent shards, exact streaming statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unirae_pipeline.config.build import build
from unirae_pipeline.data.encoding import CacheConfig, encode_block, save_shard
from unirae_pipeline.data.images import GeneratedImages, scan_image_folder
from unirae_pipeline.data.latents import LatentStore
from unirae_pipeline.data.loading import ImageDataset, center_crop
from unirae_pipeline.data.moments import RunningMoments
from unirae_pipeline.data.normalization import denormalize, normalize
from unirae_pipeline.data.shapes import SHAPES, ShapesConfig, generate

from .conftest import scratch, typed, write_folder


def shapes_cfg(params) -> ShapesConfig:
    return typed("data", params["data"]).shapes


def test_shapes_are_deterministic_balanced_and_flip_symmetric(params):
    cfg = shapes_cfg(params)
    a, b, c = generate(cfg, 16, 0), generate(cfg, 16, 0), generate(cfg, 16, 1)
    assert np.array_equal(a["train"][0], b["train"][0]) and not np.array_equal(a["train"][0], c["train"][0])
    images, labels = a["train"]
    assert images.shape == (cfg.train_per_class * cfg.num_classes, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [cfg.train_per_class] * cfg.num_classes
    assert len(SHAPES) >= 10 == cfg.num_classes
    u = np.linspace(-1.2, 1.2, 97)
    uu, vv = np.meshgrid(u, u)
    for shape in SHAPES.values():  # the class survives the h-flip used by the latent cache
        assert np.array_equal(shape(uu, vv), shape(-uu, vv))


def test_image_folder_scan_and_errors(tmp_path):
    root = write_folder(tmp_path / "ok", {"cat": 2, "dog": 3})
    image_set = scan_image_folder(root)
    assert image_set.class_names == ["cat", "dog"]
    assert image_set.splits["train"].labels.tolist() == [0, 0, 1, 1, 1]
    img, label, row = ImageDataset(image_set, "train", 8)[4]
    assert img.shape == (3, 8, 8) and label == 1 and row == 4
    with pytest.raises(FileNotFoundError, match="data.root"):
        scan_image_folder(tmp_path / "nowhere")
    empty = write_folder(tmp_path / "empty", {"cat": 1})
    (empty / "train" / "dog").mkdir()
    (empty / "val" / "dog").mkdir()
    with pytest.raises(ValueError, match="data.root: class folder .*dog.* holds no usable images"):
        scan_image_folder(empty)


def test_high_bit_depth_images_load_by_their_real_range(tmp_path):
    """A 16-bit PNG at 40000/65535 is 156/255 grey (Pillow's own convert says white), a float TIFF at 0.5 is 128
    (Pillow: black), floats above 1 are read on [0, 255], 32-bit integers up to 255 as 8-bit."""
    from PIL import Image

    root = write_folder(tmp_path / "tree", {"a": 1, "b": 1})
    folder = root / "train" / "a"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(folder / "deep.png")
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(folder / "unit.tif")
    Image.fromarray(np.full((8, 8), 200.0, np.float32)).save(folder / "byte.tif")
    Image.fromarray(np.full((8, 8), 90, np.int32)).save(folder / "int.tif")
    assert Image.open(folder / "deep.png").mode == "I;16" and Image.open(folder / "unit.tif").mode == "F"
    image_set = scan_image_folder(root, workers=1)
    dataset = ImageDataset(image_set, "train", 8)
    grey = {Path(f).name: dataset[i][0] for i, f in enumerate(image_set.splits["train"].files)}
    expected = {"deep.png": 156, "unit.tif": 128, "byte.tif": 200, "int.tif": 90}
    for name, value in expected.items():
        assert grey[name].shape == (3, 8, 8) and bool((grey[name] == value).all()), (name, grey[name].unique())


def test_sub_folders_hidden_entries_and_undecodable_names(tmp_path):
    """Files in sub-folders of a class folder belong to that class (as torchvision's ImageFolder); hidden folders
    are neither classes nor images (`.ipynb_checkpoints`); a file name that is not UTF-8 is indexed, survives the
    index files and loads."""
    import os

    from PIL import Image

    from unirae_pipeline.data.images import load_index, save_index

    root = write_folder(tmp_path / "tree", {"a": 1, "b": 1})
    train = root / "train"
    (train / "a" / "more" / "deeper").mkdir(parents=True)
    for path in (train / "a" / "more" / "x.png", train / "a" / "more" / "deeper" / "y.png",
                 train / ".ipynb_checkpoints" / "z.png", train / "b" / ".hidden" / "h.png", train / "b" / ".h.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), "red").save(path)
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    Image.new("RGB", (4, 4), "blue").save(train / "b" / odd)
    image_set = scan_image_folder(root, workers=1)
    assert image_set.class_names == ["a", "b"]
    split = image_set.splits["train"]
    by_class = {name: sorted(f for f, y in zip(split.files, split.labels) if y == k)
                for k, name in enumerate(image_set.class_names)}
    assert by_class == {"a": ["train/a/0.png", "train/a/more/deeper/y.png", "train/a/more/x.png"],
                        "b": ["train/b/0.png", f"train/b/{odd}"]}
    (tmp_path / "index").mkdir()
    save_index(image_set, tmp_path / "index", str(root))
    again = load_index(tmp_path / "index")
    assert again.splits["train"].files == split.files and again.class_names == image_set.class_names
    dataset = ImageDataset(again, "train", 4)
    assert int(dataset[split.files.index(f"train/b/{odd}")][0][2].max()) == 255  # the blue one


def test_the_index_sees_files_overwritten_in_place(tmp_path):
    """An external tree's index stamps every file (size, mtime): overwriting one in place changes the index and the
    latent cache's key, so the file is encoded again; a generated tree's index is made of its params only."""
    import os

    from PIL import Image

    from unirae_pipeline.io.image_set import ImageSetDataset
    from unirae_pipeline.pipelines.cache_latents.nodes import _index_digest

    root = write_folder(tmp_path / "tree", {"a": 2, "b": 1})
    before = scan_image_folder(root, workers=1)
    assert len(before.splits["train"].stamps) == 3
    target = root / "train" / "a" / "0.png"
    stat = target.stat()
    Image.new("RGB", (16, 16), "white").save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # however coarse the file system's clock
    after = scan_image_folder(root, workers=1)
    assert after.splits["train"].files == before.splits["train"].files
    assert after.splits["train"].stamps != before.splits["train"].stamps
    assert _index_digest(after) != _index_digest(before)
    dataset = ImageSetDataset(filepath=str(tmp_path / "index"))
    dataset.save(after)
    assert dataset.load().splits["train"].stamps == after.splits["train"].stamps
    generated = GeneratedImages(["a", "b"], {s: (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]))
                                             for s in ("train", "val")})
    written = []
    for name in ("one", "two"):
        ImageSetDataset(filepath=str(tmp_path / name)).save(generated)
        written.append((tmp_path / name / "train.csv").read_bytes())
    assert written[0] == written[1] and b"stamp" not in written[0]


@pytest.mark.slow  # dvc and kedro subprocesses
def test_dvc_sees_images_added_or_overwritten_in_the_tree(tmp_path):
    """`data.lineage` makes the ImageFolder tree a dependency of prepare_data: a real `dvc status` marks it stale
    after an image is added and after one is overwritten in place, and not before."""
    import json
    import os
    import subprocess

    from PIL import Image

    from unirae_pipeline.tools.compose import compose_params, dump

    from .conftest import copy_repository

    repo = copy_repository(tmp_path / "repo")
    tree = write_folder(tmp_path / "tree", {"a": 2, "b": 2})
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
    batches = [f"{key}=4" for key in ("train_rae.batch_size", "train_dit.batch_size", "fid.train.batch_size")]
    params = compose_params(["data=imagenet", f"data.root={tree}", "data.image_size=16", *batches],
                            conf_dir=repo / "conf")  # batches the tree's 4 training images hold (check_params)
    assert params["data"]["lineage"] == str(tree)
    (repo / "params.yaml").write_text(dump(params), encoding="utf-8")
    for cmd in (["git", "init", "-q"], ["dvc", "repro", "prepare_data"]):
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def stale() -> bool:
        out = subprocess.run(["dvc", "status", "--json", "prepare_data"], cwd=repo, env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        return "prepare_data" in json.loads(out.stdout)

    assert not stale()
    Image.new("RGB", (16, 16), "white").save(tree / "train" / "a" / "new.png")
    assert stale()
    subprocess.run(["dvc", "commit", "-f", "prepare_data"], cwd=repo, env=env, capture_output=True, check=True)
    assert not stale()
    Image.new("RGB", (16, 16), "black").save(tree / "train" / "b" / "0.png")  # same name, new content
    assert stale()


def test_data_config_requires_an_existing_root(params, tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        typed("data", {**params["data"], "source": "imagefolder", "root": str(tmp_path / "x"),
                       "lineage": str(tmp_path / "x")}).check_environment()
    with pytest.raises(ValueError, match="data.lineage .* must be data.root"):  # DVC would hash another tree
        typed("data", {**params["data"], "source": "imagefolder", "root": str(tmp_path / "x")})
    with pytest.raises(ValueError, match="data.source"):
        typed("data", {**params["data"], "source": "lsun"})


def test_center_crop_is_adm_style():
    from PIL import Image

    img = Image.fromarray(np.arange(40 * 64 * 3, dtype=np.uint8).reshape(40, 64, 3))
    assert center_crop(img, 16).size == (16, 16)


def _shards(n: int, shard_size: int, flips: bool):
    """Shards of `shard_size` images encoded by a stand-in encoder, (B, 1, 4, 4) means over the channels."""
    images = torch.rand(n, 3, 4, 4)
    encode = lambda x: x.mean(1, keepdim=True)  # noqa: E731
    shards = []
    for lo in range(0, n, shard_size):
        hi = min(lo + shard_size, n)
        batches = [(images[i:min(i + 3, hi)], torch.arange(i, min(i + 3, hi)) % 2, torch.arange(i, min(i + 3, hi)))
                   for i in range(lo, hi, 3)]
        shards.append(encode_block(encode, batches, "train", flips, torch.float32))
    return images, shards


def write_store(path, shards, meta: dict) -> LatentStore:
    """Shard files as cache_latents writes them, assembled into a store."""
    for k, shard in enumerate(shards):
        save_shard(path.parent / "partial" / shard.split / f"shard_{k:05d}.safetensors", shard, meta["fingerprint"])
    store = LatentStore(path)
    store.assemble(path.parent / "partial", {"train": len(shards)}, meta)
    return store


def test_encode_block_interleaves_mirrored_batches():
    images, shards = _shards(10, 4, flips=True)
    assert [len(s.labels) for s in shards] == [8, 8, 4]  # 4, 4 and 2 images, each plain and mirrored
    latents = torch.cat([s.latents for s in shards])
    flips = torch.cat([s.flip for s in shards]).bool()
    rows = torch.cat([s.rows for s in shards])
    assert flips.sum() == 10 and sorted(rows[flips].tolist()) == list(range(10))
    assert rows[:6].tolist() == [0, 1, 2, 0, 1, 2]  # a batch of 3, then its mirror
    mirrored = images[rows[flips]].flip(-1).mean(1, keepdim=True)
    assert torch.allclose(latents[flips], mirrored)


@pytest.mark.parametrize("hflip", [True, False])
def test_an_epoch_visits_every_image_once_plain_or_mirrored_at_random(tmp_path, hflip):
    """The reference's epoch (RandomHorizontalFlip over the image set): N images per epoch, not the 2N cached latents,
    each read plain or mirrored as drawn per image and epoch; with latents.hflip off, always plain. The in-memory
    stream (train_rae) and the memory-mapped one (train_dit) read the same rows."""
    from unirae_pipeline.data.latent_rows import LatentRows
    from unirae_pipeline.training.data import KeyedBatches, TensorBatches
    from unirae_pipeline.training.fit import TrainerConfig, steps_per_epoch

    images, shards = _shards(12, 4, flips=hflip)
    store = write_store(tmp_path / "latents", shards, {"fingerprint": "abc", "latent_shape": [1, 4, 4]})
    cache, views = store.load("train"), store.views("train")
    assert views.shape == (12, 2 if hflip else 1)
    assert torch.equal(cache["rows"][views], torch.arange(12)[:, None].expand_as(views))
    assert torch.equal(cache["flip"][views].long(), torch.arange(views.shape[1]).expand_as(views))

    batches = KeyedBatches(LatentRows(store, "train"), 4, seed=0, views=views)
    trainer = TrainerConfig("cpu", 1, 1, "auto", "32-true", 1)
    assert batches.num_samples == 12 and steps_per_epoch(batches.num_samples, 4, trainer) == 3
    epochs = 200
    keys = [torch.tensor([r for r, _ in k]) for _, k in zip(range(3 * epochs), iter(batches))]
    seen = torch.stack([torch.cat(keys[3 * e: 3 * e + 3]) for e in range(epochs)])  # (epoch, 12) latent rows
    assert all(sorted(cache["rows"][e].tolist()) == list(range(12)) for e in seen)  # each image once per epoch
    mirrored = cache["flip"][seen].float()
    if hflip:  # a fair coin per image and epoch: every image both ways, about half of the reads mirrored
        assert 0.4 < float(mirrored.mean()) < 0.6 and bool((mirrored.mean(0) > 0).all() & (mirrored.mean(0) < 1).all())
    else:
        assert float(mirrored.sum()) == 0
    in_memory = TensorBatches((cache["latents"], cache["rows"]), 4, seed=0, views=views)
    for k, (z, rows) in zip(keys, in_memory):
        assert torch.equal(rows, cache["rows"][k]) and torch.equal(z, cache["latents"][k])


def test_latent_store_roundtrip_and_fingerprint_check(tmp_path):
    _, shards = _shards(7, 3, flips=False)
    store = write_store(tmp_path / "latents", shards, {"fingerprint": "abc", "latent_shape": [1, 4, 4]})
    assert store.manifest["splits"]["train"] == {"count": 7, "shards": [3, 3, 1]}
    assert not (tmp_path / "partial").exists()  # moved in, then removed
    loaded = store.load("train")
    assert torch.allclose(loaded["latents"], torch.cat([s.latents for s in shards]))
    manifest = store.manifest
    manifest["fingerprint"] = "other"
    (tmp_path / "latents" / "manifest.json").write_text(__import__("json").dumps(manifest))
    with pytest.raises(ValueError, match="fingerprint"):
        store.load("train")


def test_assembling_an_incomplete_cache_leaves_no_store(tmp_path):
    _, shards = _shards(4, 2, flips=False)
    save_shard(tmp_path / "partial" / "train" / "shard_00000.safetensors", shards[0], "abc")
    store = LatentStore(tmp_path / "latents")
    with pytest.raises(Exception, match="shard_00001"):
        store.assemble(tmp_path / "partial", {"train": 2}, {"fingerprint": "abc"})
    assert not (tmp_path / "latents").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial"]  # no temp folder left; the partial run stays


def test_running_moments_equal_two_pass():
    torch.manual_seed(0)
    data = torch.randn(1003, 3, 2, 2, dtype=torch.float64) * 5 + 100  # a large mean stresses naive formulas
    moments = RunningMoments()
    for chunk in data.split(97):
        moments.update(chunk)
    mean, var = moments.result()
    assert torch.allclose(mean.double(), data.mean(0), rtol=1e-6)
    assert torch.allclose(var.double(), data.var(0, unbiased=False), rtol=1e-5)
    assert moments.count == 1003


def test_normalize_roundtrip_and_cache_config_errors():
    z, mean, var = torch.randn(2, 3, 2, 2), torch.randn(3, 2, 2), torch.rand(3, 2, 2)
    assert torch.allclose(denormalize(normalize(z, mean, var), mean, var), z, atol=1e-6)
    with pytest.raises(ValueError, match="latents.dtype"):
        CacheConfig(256, 1024, "int8", "fp32", True)
    # types and Literal choices are the builder's: one check, naming the key
    with pytest.raises(ValueError, match="'latents.precision' must be 'fp32' or 'bf16'"):
        build(CacheConfig, {"batch_size": 256, "shard_size": 1024, "dtype": "bfloat16", "precision": "fp16",
                            "hflip": True}, "latents")
    with pytest.raises(ValueError, match="'latents.hflip' must be true or false"):
        build(CacheConfig, {"batch_size": 256, "shard_size": 1024, "dtype": "bfloat16", "precision": "fp32",
                            "hflip": "maybe"}, "latents")


def test_bad_files_are_skipped_or_converted_by_policy(tmp_path, monkeypatch):
    """Corrupt, truncated, non-image and bomb files are skipped, each for its reason; CMYK, grayscale, palette,
    RGBA, tiny and large images are kept and load as RGB of the configured size."""
    from PIL import Image

    from unirae_pipeline.data.images import check_image

    root = write_folder(tmp_path / "tree", {"a": 1, "b": 1})
    good = tmp_path / "tree" / "train" / "a"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), "CMYK").save(good / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(good / "gray.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(good / "rgba.png")
    Image.new("P", (9, 9)).save(good / "palette.png")
    Image.new("RGB", (2, 2), "red").save(good / "tiny.png")
    Image.new("RGB", (600, 500), "blue").save(good / "large.jpg")
    (good / "notes.txt").write_text("not an image")
    (good / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    data = (tmp_path / "full.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data)
    (good / "truncated.png").write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])
    Image.new("RGB", (1000, 1000)).save(good / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400_000)  # 1000x1000 is now more than twice the limit
    image_set = scan_image_folder(root, workers=2)
    names = {f.split("/")[-1] for f in image_set.splits["train"].files}
    assert {"cmyk.jpg", "gray.png", "rgba.png", "palette.png", "tiny.png", "large.jpg"} <= names
    assert not names & {"notes.txt", "corrupt.jpg", "truncated.png", "bomb.png"}
    assert {name: check_image(good / name) for name in ("notes.txt", "corrupt.jpg", "truncated.png", "bomb.png")} == {
        "notes.txt": "not an image file", "corrupt.jpg": "corrupt or truncated",
        "truncated.png": "corrupt or truncated", "bomb.png": "decompression bomb"}
    ds = ImageDataset(image_set, "train", 16)
    for i in range(len(ds)):
        img, _, _ = ds[i]
        assert img.shape == (3, 16, 16)


def test_a_class_with_only_bad_files_is_an_error(tmp_path):
    root = write_folder(tmp_path / "tree", {"a": 1, "b": 1})
    for f in (root / "val" / "b").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(ValueError, match="data.root: class folder .*b.* holds no usable images"):
        scan_image_folder(root)


def _rss_anon_mb() -> float:
    """Anonymous resident memory of this process (file-backed pages of memory-mapped files excluded)."""
    for line in open("/proc/self/status", encoding="utf-8"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def test_latent_rows_stream_from_memory_mapped_shards(tmp_path):
    """train_dit's data path: the same batches as the in-memory cache, with any number of workers and
    after a resume; reading a cache of 256 MB (16 shards) adds far less than its size to the process's memory."""
    from unirae_pipeline.data.encoding import Shard
    from unirae_pipeline.data.latent_rows import LatentRows
    from unirae_pipeline.training.data import KeyedBatches

    gen = torch.Generator().manual_seed(0)
    shape, per_shard, count = (64, 8, 8), 1024, 16

    def shards():
        for k in range(count):
            z = torch.randn((per_shard, *shape), generator=gen)
            labels = torch.randint(0, 10, (per_shard,), generator=gen)
            rows = torch.arange(per_shard) + k * per_shard
            yield Shard("train", z, labels, rows, torch.zeros(per_shard, dtype=torch.uint8))

    store = write_store(tmp_path / "latents", list(shards()), {"fingerprint": "abc", "latent_shape": list(shape)})
    rows = LatentRows(store, "train")
    assert len(rows) == count * per_shard
    base = _rss_anon_mb()
    peak = base
    shapes = set()
    for _, (x, y) in zip(range(32), KeyedBatches(rows, 512, seed=0).loader()):  # one epoch
        peak = max(peak, _rss_anon_mb())
        shapes.add((x.shape, x.dtype, y.shape))
    assert shapes == {((512, *shape), torch.float32, (512,))}  # the cache's dtype (this one is float32)
    assert peak - base < 64, f"streaming a 256 MB cache grew memory by {peak - base:.0f} MB"

    cache = store.load("train")
    batches = KeyedBatches(rows, 8, seed=3, num_workers=0)
    first = [b for _, b in zip(range(5), batches.loader())]
    idx = [torch.tensor([r for r, _ in keys]) for _, keys in zip(range(5), iter(batches))]
    for (x, y), i in zip(first, idx):
        assert torch.equal(x, cache["latents"][i]) and torch.equal(y, cache["labels"][i])
    two = [b for _, b in zip(range(5), KeyedBatches(rows, 8, seed=3, num_workers=2).loader())]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, two))
    resumed = KeyedBatches(rows, 8, seed=3)
    resumed.start = 3
    assert torch.equal(next(iter(resumed.loader()))[0], first[3][0])
    del cache
    loaded_base = _rss_anon_mb()
    whole = store.load("train")  # the check can fail: holding the cache shows up
    assert _rss_anon_mb() - loaded_base > 200 and len(whole["labels"]) == count * per_shard


@pytest.mark.slow
def test_latent_caching_memory_does_not_grow_with_the_data_set(tmp_path):
    """cache_latents holds one shard at a time: caching 2,000 images (500 MB of bf16 latents, 63 shards) raises the
    process's peak anonymous memory (sampled every 5 ms by a monitor thread) by a fraction of that, about what caching
    64 images does."""
    import threading

    from PIL import Image

    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.io.latent_store import LatentStoreDataset
    from unirae_pipeline.pipelines.cache_latents import nodes

    encoder = typed("encoder", {"model": "vit_small_patch14_reg4_dinov2", "weights": "none", "input_size": 64,
                                "overrides": {"patch_size": 4, "embed_dim": 256, "depth": 1, "num_heads": 4}})
    # 128 KB per latent
    latents = typed("latents", {"batch_size": 32, "shard_size": 32, "dtype": "bfloat16", "precision": "fp32",
                                "hflip": True})

    def cache(name: str, n: int) -> tuple[float, float]:
        """(peak growth of anonymous memory in MB, size of the cache written in MB)."""
        rng = np.random.default_rng(0)
        for split, count in (("train", n), ("val", 32)):
            (tmp_path / name / split / "a").mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                    tmp_path / name / split / "a" / f"{i}.png", compress_level=0)
        image_set = scan_image_folder(tmp_path / name)
        base, peak, done = _rss_anon_mb(), [0.0], threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_anon_mb())
                done.wait(0.005)

        thread = threading.Thread(target=watch)
        thread.start()
        try:
            LatentStoreDataset(filepath=str(tmp_path / f"{name}-latents")).save(
                nodes.cache_latents(image_set, 64, encoder, latents, 0, scratch(tmp_path / f"{name}-scratch")))
        finally:
            done.set()
            thread.join()
        size = sum(f.stat().st_size for f in (tmp_path / f"{name}-latents").rglob("*.safetensors")) / 2**20
        return peak[0] - base, size

    cache("warm-up", 64)  # first-use allocations of torch and the allocator
    small, small_size = cache("small", 64)
    large, large_size = cache("large", 2000)
    assert LatentStore(tmp_path / "large-latents").manifest["splits"]["train"]["count"] == 4000
    assert large_size > 450 and large_size > 20 * small_size
    # holding the cache would add >= 500 MB; one shard in flight plus the encoder's activations stay ~100-150 MB
    assert large < 0.4 * large_size, f"caching {large_size:.0f} MB grew memory by {large:.0f} MB ({small:.0f} for 64)"


def test_bf16_caching_is_close_to_fp32_and_cached_apart(tmp_path):
    """`latents.precision: bf16` runs the encoder under autocast: latents within bf16 rounding of the fp32 ones, in
    a cache folder of their own (the precision is part of the run's key, so no fp32 shard is ever reused)."""
    from safetensors.torch import load_file

    from unirae_pipeline.pipelines.cache_latents import nodes

    image_set = scan_image_folder(write_folder(tmp_path / "imgs", {"a": 3, "b": 2}, size=16))
    encoder = typed("encoder", {"model": "vit_small_patch14_reg4_dinov2", "weights": "none", "input_size": 16,
                                "overrides": {"patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4}})
    caches = {}
    for precision in ("fp32", "bf16"):
        latents = typed("latents", {"batch_size": 4, "shard_size": 4, "dtype": "float32", "precision": precision,
                                    "hflip": True})
        cache = nodes.cache_latents(image_set, 16, encoder, latents, 0, scratch(tmp_path / "scratch"))
        caches[precision] = torch.cat([load_file(str(cache.folder / "train" / f"shard_{k:05d}.safetensors"))["latents"]
                                       for k in range(cache.shards["train"])])
    assert len(list((tmp_path / "scratch" / "latents").iterdir())) == 2
    fp32, bf16 = caches["fp32"], caches["bf16"]
    assert fp32.shape == bf16.shape == (10, 64, 4, 4) and not torch.equal(fp32, bf16)
    assert (bf16 - fp32).norm() / fp32.norm() < 0.01  # 0.003 here; bf16 rounds at 0.004


def test_example_folders_are_the_packaged_sets_split_per_class(tmp_path):
    """tools.example_folders writes scikit-learn's digits and scikit-image's LFW faces as ImageFolder trees that the
    pipeline indexes: every image once, each class split by the val fraction, the pixels those of the package."""
    from PIL import Image

    from unirae_pipeline.data.images import scan_image_folder
    from unirae_pipeline.tools.example_folders import faces, write_folder

    assert write_folder("faces", tmp_path / "faces") == {"train": 160, "val": 40}
    image_set = scan_image_folder(tmp_path / "faces")
    assert image_set.class_names == ["face", "non_face"]
    assert {k: len(v) for k, v in image_set.splits.items()} == {"train": 160, "val": 40}
    images, _, _ = faces()
    (first,) = [f for f in (tmp_path / "faces").rglob("0.png") if f.parent.name == "face"]
    assert np.array_equal(np.asarray(Image.open(first)), images[0])
    counts = write_folder("digits", tmp_path / "digits", val_fraction=0.5)
    assert counts["train"] + counts["val"] == 1797 and abs(counts["train"] - counts["val"]) <= 10
    with pytest.raises(FileExistsError, match="not empty"):
        write_folder("digits", tmp_path / "digits")
