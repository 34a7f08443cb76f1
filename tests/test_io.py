"""Kedro datasets: round trips, atomic writes, clear errors for missing artefacts."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from PIL import Image

from unirae_pipeline.data.images import GeneratedImages
from unirae_pipeline.io.datasets import CSVDataset, JSONDataset, ModelFileDataset, NpzDataset, PNGDataset
from unirae_pipeline.io.image_set import ImageSetDataset
from unirae_pipeline.models.serialization import ModelFile

from .conftest import write_folder


def test_roundtrips(tmp_path):
    cases = [
        (JSONDataset, "m.json", {"fd": 1.5}, lambda a, b: a == b),
        (NpzDataset, "s.npz", {"images": np.zeros((2, 4, 4, 3), np.uint8)},
         lambda a, b: np.array_equal(a["images"], b["images"])),
        (partial(ModelFileDataset, kind="dit"), "w.safetensors", ModelFile("dit", {"w": torch.ones(2)}, {"config": {}}),
         lambda a, b: torch.equal(a.tensors["w"], b.tensors["w"]) and a.meta == b.meta and b.kind == "dit"),
        (CSVDataset, "c.csv", pd.DataFrame({"step": [1], "loss": [0.5]}), lambda a, b: a.equals(b)),
        (PNGDataset, "g.png", Image.new("RGB", (4, 4), "red"), lambda a, b: a.tobytes() == b.tobytes()),
    ]
    for cls, name, value, same in cases:
        ds = cls(filepath=str(tmp_path / name))
        assert not ds.exists()
        ds.save(value)
        assert same(value, ds.load())
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp leftovers


WRITE_EVERY_KIND = """
import sys
from pathlib import Path
import numpy as np, pandas as pd, torch
from PIL import Image
from unirae_pipeline.data.encoding import Shard, save_shard
from unirae_pipeline.data.samples import SampleSet
from unirae_pipeline.io.datasets import CSVDataset, JSONDataset, ModelFileDataset, NpzDataset, PNGDataset
from unirae_pipeline.io.image_set import ImageSetDataset
from unirae_pipeline.io.latent_store import LatentStoreDataset
from unirae_pipeline.io.samples import SamplesDataset
from unirae_pipeline.data.images import GeneratedImages
from unirae_pipeline.models.serialization import ModelFile
out, g = Path(sys.argv[1]), torch.Generator().manual_seed(0)
meta = {f"key_{i}": i for i in range(12)}  # many metadata keys: safetensors writes them in hash order
ModelFileDataset(filepath=str(out / "model.safetensors"), kind="dit").save(
    ModelFile("dit", {"w": torch.randn(3, 4, generator=g)}, meta))
NpzDataset(filepath=str(out / "stats.npz")).save({"mu": np.arange(4.0), "sigma": np.eye(4)})
images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
SamplesDataset(filepath=str(out / "samples.npz")).save(SampleSet([images], np.array([0, 1]), (4, 4, 3)))
JSONDataset(filepath=str(out / "metrics.json")).save({"fd": 1.5, "accuracy": 0.25})
CSVDataset(filepath=str(out / "loss.csv")).save(pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.25]}))
PNGDataset(filepath=str(out / "grid.png")).save(Image.fromarray(images[0]))
ImageSetDataset(filepath=str(out / "image_set")).save(
    GeneratedImages(["a", "b"], {s: (images, np.array([0, 1])) for s in ("train", "val")}))
rows = torch.tensor([0, 1])
shard = Shard("train", torch.randn(2, 8, 2, 2, generator=g), rows, rows.clone(), torch.zeros(2, dtype=torch.uint8))
save_shard(out / "shard.safetensors", shard, "0123456789abcdef")
"""


def test_every_output_is_byte_identical_across_processes_and_group_readable(tmp_path):
    """The same content written by two processes gives the same bytes (DVC hashes files: a new hash reruns every
    stage downstream), as files with the umask's permissions, not a temp file's owner-only mode."""
    import hashlib
    import os
    import subprocess
    import sys

    def write(name: str) -> dict[str, str]:
        (tmp_path / name).mkdir()
        subprocess.run([sys.executable, "-c", WRITE_EVERY_KIND, str(tmp_path / name)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": "random"})
        return {str(f.relative_to(tmp_path / name)): hashlib.md5(f.read_bytes()).hexdigest()
                for f in sorted((tmp_path / name).rglob("*")) if f.is_file()}

    first, again = write("first"), write("again")
    assert len(first) >= 9 and first == again
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "first").rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path


def test_missing_artefact_names_the_stage(tmp_path):
    with pytest.raises(DatasetError, match="run the stage that produces it"):
        JSONDataset(filepath=str(tmp_path / "nope.json")).load()


def test_image_set_generated_and_external(tmp_path):
    arrays = {s: (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1])) for s in ("train", "val")}
    ds = ImageSetDataset(filepath=str(tmp_path / "generated"))
    ds.save(GeneratedImages(["a", "b"], arrays))
    loaded = ds.load()
    assert loaded.class_names == ["a", "b"] and (loaded.root / loaded.splits["train"].files[0]).is_file()
    from unirae_pipeline.data.images import scan_image_folder

    external = scan_image_folder(write_folder(tmp_path / "tree", {"x": 2}))
    ds2 = ImageSetDataset(filepath=str(tmp_path / "external"))
    ds2.save(external)
    assert ds2.load().root == external.root.resolve()
    assert not (tmp_path / "external" / "images").exists()  # an external tree is indexed, not copied


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    ds = JSONDataset(filepath=str(tmp_path / "m.json"))
    for var, rank in (("LOCAL_RANK", "1"), ("SLURM_PROCID", "3"), ("RANK", "2")):
        monkeypatch.setenv(var, rank)
        ds.save({"fd": 1.0})
        assert not ds.exists()
        monkeypatch.delenv(var)
    monkeypatch.setenv("RANK", "0")
    ds.save({"fd": 1.0})
    assert ds.load() == {"fd": 1.0}


def test_rank_zero_stops_waiting_for_a_rank_that_died(tmp_path):
    """The wait for the other ranks' shard files returns once they exist, and gives up, naming what is missing, when
    none appears for `stall_s` (a dead rank under SLURM would otherwise hang rank zero for ever)."""
    import threading

    from unirae_pipeline.runtime.ranks import wait_for_files

    paths = [tmp_path / "shard_00000.npy", tmp_path / "shard_00001.npy"]
    paths[0].touch()
    later = threading.Timer(0.1, paths[1].touch)
    later.start()
    wait_for_files(paths, "shards", poll_s=0.01, stall_s=5.0)  # returns once the second file appears
    later.join()
    with pytest.raises(TimeoutError, match=r"no new shards .* 1 missing \(first: .*shard_00002.npy\). Did a rank"):
        wait_for_files([*paths, tmp_path / "shard_00002.npy"], "shards", poll_s=0.01, stall_s=0.1)


def _hold(folder, rank: int):
    """Another process's live claim of `folder` as `rank` (a lock on its own open file, as `claimed` takes it)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / f".rank-{rank}", "a+", encoding="utf-8")  # held until the caller closes it
    f.write("pid 4242 on elsewhere")
    f.flush()
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def test_the_same_run_twice_on_one_scratch_is_refused(tmp_path):
    """Two processes of the same stage and params on one scratch folder: the second is refused at once (before, the
    first to finish deleted the folder the other was writing to); a killed run leaves no stale claim."""
    from unirae_pipeline.runtime.ranks import claimed, is_running, sharded_job

    folder, made = tmp_path / "run", []
    paths = [folder / f"shard_{k}.npy" for k in range(2)]
    holder = _hold(folder, 0)
    assert is_running(folder, 0) and not is_running(folder, 1)
    with pytest.raises(RuntimeError, match=r"in use by another run .*\(pid 4242 on elsewhere, rank 0\)"):
        sharded_job(paths, made.append, "shards")
    assert made == []
    holder.close()  # the other process ended (or was killed): its lock is gone with it
    assert not is_running(folder, 0)
    with claimed(folder):
        assert is_running(folder, 0)
    assert sharded_job(paths, lambda k: (made.append(k), paths[k].touch()), "shards") == (0, 2) and made == [0, 1]


def test_a_second_process_is_refused_and_a_killed_one_leaves_no_claim(tmp_path):
    """Two real processes: while one holds a run folder, the same run in another is refused naming its pid; once it
    is killed (SIGKILL: no clean-up runs), the kernel has dropped its lock and the run can start."""
    import signal

    from unirae_pipeline.runtime.ranks import claimed

    folder = tmp_path / "run"
    code = ("import sys; from pathlib import Path; from unirae_pipeline.runtime.ranks import claimed\n"
            "with claimed(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"in use by another run .*\(pid {child.pid} on "):
            with claimed(folder):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with claimed(folder):
        pass


def test_rank_zero_names_ranks_that_never_started(tmp_path, monkeypatch):
    """`sbatch --ntasks=2` without `srun` starts one process that counts two: rank zero does its half, then stops
    with an error naming the missing rank instead of waiting hours; a rank that is running is waited for."""
    import threading

    from unirae_pipeline.runtime import ranks

    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setattr(ranks, "STARTUP_S", 0.05)  # how long the other ranks get to start (minutes in real runs)
    folder = tmp_path / "run"
    paths = [folder / f"shard_{k}.npy" for k in range(4)]
    with pytest.raises(RuntimeError, match=r"ranks \[1\] of 2 are not running and 2 shards are missing"):
        ranks.sharded_job(paths, lambda k: paths[k].touch(), "shards")
    assert [p.is_file() for p in paths] == [True, False, True, False]  # rank zero's half is kept
    holder = _hold(folder, 1)  # now rank 1 runs, and writes its shards a little later
    later = threading.Timer(0.2, lambda: [p.touch() for p in paths[1::2]])
    later.start()
    ranks.wait_for_files(paths, "shards", poll_s=0.01)
    later.join()
    holder.close()



def flip_bit(path, offset: int) -> None:
    """One bit of the file at `offset` (from the end when negative) flipped, its mtime kept: disk rot as it looks."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_flipped_bit_in_a_model_file_fails_its_reader_naming_the_file_and_the_fix(tmp_path):
    """Weights and statistics carry a SHA-256 of the whole file (header with its checksum blank, then the data):
    a bit flipped in a tensor, in the metadata or in the checksum itself is refused when the file is read."""
    torch.manual_seed(0)
    stats = ModelFile("stats", {"mean": torch.randn(4, 2, 2), "var": torch.rand(4, 2, 2)}, {"fingerprint": "abc"})
    path = tmp_path / "latent_stats.safetensors"
    dataset = ModelFileDataset(filepath=str(path), kind="stats")
    dataset.save(stats)
    assert torch.equal(dataset.load().tensors["mean"], stats.tensors["mean"]) and dataset.load().meta == stats.meta
    clean = path.read_bytes()
    header = int.from_bytes(clean[:8], "little") + 8
    for where in (-3, clean.index(b"abc") + 1, clean.index(b"unirae.sha256") + 20):  # data, metadata, checksum
        flip_bit(path, where)
        with pytest.raises(DatasetError, match=f"{path}: .*dvc checkout {path}"):  # Kedro names the dataset too
            dataset.load()
        path.write_bytes(clean)
    assert where < header and dataset.load().meta == stats.meta


def test_a_flipped_bit_in_a_latent_shard_fails_every_reader_and_a_kept_one_is_encoded_again(tmp_path, caplog):
    """A latent shard with one bit flipped: the statistics stream, the training rows (checked once per run, in
    threads) and the reconstructions refuse it naming the file and `dvc checkout`; a kept shard of an interrupted
    cache_latents run that is damaged is encoded again instead of kept."""
    from unirae_pipeline.data.encoding import Shard, intact_shard, save_shard
    from unirae_pipeline.data.latent_rows import LatentRows
    from unirae_pipeline.data.latents import LatentStore
    from unirae_pipeline.fileio import CorruptFileError

    folder = tmp_path / "work"
    for k in range(2):
        shard = Shard("train", torch.randn(3, 4, 2, 2), torch.arange(3), torch.arange(3) + 3 * k,
                      torch.zeros(3, dtype=torch.uint8))
        save_shard(folder / "train" / f"shard_{k:05d}.safetensors", shard, "fp")
    store = LatentStore(tmp_path / "latents")
    store.assemble(folder, {"train": 2}, {"fingerprint": "fp", "latent_shape": [4, 2, 2]})
    assert len(LatentRows(store, "train")) == 6 and len(list(store.iter_shards("train"))) == 2
    damaged = store.shard_files("train")[1]
    flip_bit(damaged, -5)
    for read in (lambda: LatentRows(store, "train"), lambda: list(store.iter_shards("train"))):
        with pytest.raises(CorruptFileError, match=f"{damaged}: its content does not match its checksum.*dvc checkout"):
            read()
    assert intact_shard(store.shard_files("train")[0]) and not intact_shard(damaged)
    assert "encoded again" in caplog.text


def test_non_finite_weights_or_statistics_are_never_written(tmp_path):
    """A model file holding NaN or Inf (a diverged run, NaN inputs) is refused before it is written, with the count
    and the first tensor; nothing appears at the path."""
    path = tmp_path / "dit.safetensors"
    bad = ModelFile("dit", {"a": torch.tensor([1.0, float("nan"), float("inf")]), "b": torch.ones(2),
                            "steps": torch.tensor([3])}, {})
    with pytest.raises(DatasetError, match=r"2 non-finite values in 1 tensor\(s\) \(first: 'a'\)"):
        ModelFileDataset(filepath=str(path), kind="dit").save(bad)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_flipped_bit_in_samples_or_statistics_fails_its_reader_and_a_kept_sample_shard_is_made_again(tmp_path):
    """The ADM npz of samples and the reference statistics carry a SHA-256 member (`unirae.sha256`, which ADM
    readers ignore); a bit flipped in an image or a statistic is refused when the stage opens the file. A sample
    shard kept from an interrupted run is checked against the checksum beside it and made again when damaged."""
    from unirae_pipeline.data.samples import SampleSet, intact_shard, write_shard
    from unirae_pipeline.io.samples import SamplesDataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    shard = tmp_path / "cache" / "shard_00000.npy"
    shard.parent.mkdir()
    write_shard(shard, images)
    assert intact_shard(shard)
    samples = SamplesDataset(filepath=str(tmp_path / "samples.npz"))
    samples.save(SampleSet([np.load(shard, mmap_mode="r")], np.arange(6), (8, 8, 3)))
    stats = NpzDataset(filepath=str(tmp_path / "reference_stats.npz"))
    stats.save({"mu": rng.normal(size=4), "sigma": np.eye(4)})
    assert set(stats.load()) == {"mu", "sigma"} and np.load(tmp_path / "samples.npz")["arr_0"].shape == (6, 8, 8, 3)
    assert np.array_equal(np.concatenate(list(samples.load().chunks(4))), images)
    for dataset, path, into in ((samples, tmp_path / "samples.npz", 200),
                                (stats, tmp_path / "reference_stats.npz", 140)):
        flip_bit(path, path.read_bytes().index(b"\x93NUMPY") + into)  # an image byte, a float of mu
        with pytest.raises(DatasetError, match=f"{path}: its content does not match its checksum.*dvc checkout {path}"):
            dataset.load()
    flip_bit(shard, -1)
    assert not intact_shard(shard)
