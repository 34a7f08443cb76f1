"""Kedro datasets: round trips, atomic writes, clear errors for missing artefacts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from PIL import Image

from unirae_pipeline.data.images import GeneratedImages
from unirae_pipeline.io.datasets import CSVDataset, JSONDataset, NpzDataset, PNGDataset, SafetensorsDataset
from unirae_pipeline.io.image_set import ImageSetDataset

from .conftest import write_folder


def test_roundtrips(tmp_path):
    cases = [
        (JSONDataset, "m.json", {"fd": 1.5}, lambda a, b: a == b),
        (NpzDataset, "s.npz", {"images": np.zeros((2, 4, 4, 3), np.uint8)},
         lambda a, b: np.array_equal(a["images"], b["images"])),
        (SafetensorsDataset, "w.safetensors", ({"w": torch.ones(2)}, {"config": "{}"}),
         lambda a, b: torch.equal(a[0]["w"], b[0]["w"]) and a[1] == b[1]),
        (CSVDataset, "c.csv", pd.DataFrame({"step": [1], "loss": [0.5]}), lambda a, b: a.equals(b)),
        (PNGDataset, "g.png", Image.new("RGB", (4, 4), "red"), lambda a, b: a.tobytes() == b.tobytes()),
    ]
    for cls, name, value, same in cases:
        ds = cls(filepath=str(tmp_path / name))
        assert not ds.exists()
        ds.save(value)
        assert same(value, ds.load())
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp leftovers


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

    from unirae_pipeline.ranks import wait_for_files

    paths = [tmp_path / "shard_00000.npy", tmp_path / "shard_00001.npy"]
    paths[0].touch()
    later = threading.Timer(0.1, paths[1].touch)
    later.start()
    wait_for_files(paths, "shards", poll_s=0.01, stall_s=5.0)  # returns once the second file appears
    later.join()
    with pytest.raises(TimeoutError, match=r"no new shards .* 1 missing \(first: .*shard_00002.npy\). Did a rank"):
        wait_for_files([*paths, tmp_path / "shard_00002.npy"], "shards", poll_s=0.01, stall_s=0.1)
