"""One source of truth: params.yaml is the Hydra composition, Kedro reads it, dvc.yaml is generated and fresh."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from hydra.errors import MissingConfigException

from unirae_pipeline.config.build import plain
from unirae_pipeline.config.params import check_environment, load_params
from unirae_pipeline.pipeline_registry import STAGES
from unirae_pipeline.tools.compose import compose_params, dump
from unirae_pipeline.tools.dvc_stages import MARKER

from .conftest import ROOT, copy_repository, write_folder


def test_params_yaml_is_the_hydra_composition(params):
    composed = compose_params(conf_dir=ROOT / "conf")
    assert composed == params
    assert dump(composed) == (ROOT / "params.yaml").read_text()  # byte-identical to what DVC writes


def test_presets_and_overrides_compose():
    xl = compose_params(["dit=XL", "decoder=XL", "encoder=dinov2_b"], conf_dir=ROOT / "conf")
    assert (xl["dit"]["hidden_size"], xl["dit"]["depth"], xl["dit"]["head_hidden_size"]) == (1152, 28, 2048)
    assert xl["decoder"]["hidden_size"] == 1152 and xl["encoder"]["model"] == "vit_base_patch14_reg4_dinov2"
    deeper = compose_params(["dit=S", "dit.depth=8"], conf_dir=ROOT / "conf")
    assert deeper["dit"]["depth"] == 8 and deeper["dit"]["hidden_size"] == 384
    smoke = compose_params(["profile=smoke"], conf_dir=ROOT / "conf")
    assert smoke["train_dit"]["duration"] < 100 and smoke["dit"] == compose_params(conf_dir=ROOT / "conf")["dit"]
    assert smoke["data"]["shapes"]["train_per_class"] < 100  # the built-in set shrinks too
    # ... and a user's folder stays theirs, whichever comes first (it composed to a half-filled `shapes` group)
    for order in (["profile=smoke", "data=folder"], ["data=folder", "profile=smoke"]):
        mine = compose_params([*order, "data.root=/my/images"], conf_dir=ROOT / "conf")
        assert mine["data"]["root"] == "/my/images" and mine["data"]["shapes"] is None
        assert mine["train_dit"]["duration"] == smoke["train_dit"]["duration"]
        load_params(mine)


def test_params_are_one_typed_frozen_tree(params):
    """params.yaml becomes one tree of frozen dataclasses, sub-groups included (no mapping left for a node to
    rebuild but the free-form timm constructor overrides), that turns back into exactly params.yaml."""
    tree = load_params(params)
    free_form = {"encoder.overrides", "train_rae.disc.overrides"}

    def walk(node, key: str) -> int:
        assert dataclasses.is_dataclass(node) and node.__dataclass_params__.frozen, key
        groups = 1
        for field in dataclasses.fields(node):
            value, name = getattr(node, field.name), f"{key}.{field.name}".lstrip(".")
            if dataclasses.is_dataclass(value):
                groups += walk(value, name)
            else:
                assert not isinstance(value, dict) or name in free_form, name
        return groups

    assert walk(tree, "") == 20  # the root, 13 groups, 6 sub-groups
    assert plain(tree) == params
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree.sample.sampler.num_steps = 3
    assert tree.get("sample.sampler.method") == params["sample"]["sampler"]["method"]
    with pytest.raises(ValueError, match=r"'sample.sampler.nsteps' is not a key of params.yaml \(did you mean "
                                         r"sample.sampler.num_steps\?\)"):
        load_params({**params, "sample": {**params["sample"], "sampler": {**params["sample"]["sampler"], "nsteps": 1}}})


def test_every_node_takes_its_params_as_the_tree_holds_them(params):
    """The hook hands each `params:` input the tree's value: every node annotates it with that value's type (Kedro
    reads the same annotations; a group of several architectures, `dit`, by their base `Tagged`, which Kedro leaves
    alone without a warning), and the hook's answer for a node is exactly those values."""
    import importlib
    import typing

    from kedro.pipeline import Pipeline
    from kedro.validation.type_extractor import TypeExtractor

    from unirae_pipeline.config.build import Tagged
    from unirae_pipeline.config.hooks import ParamsHook

    tree = load_params(params)
    pipelines = {s: importlib.import_module(f"unirae_pipeline.pipelines.{s}").create_pipeline() for s in STAGES}
    annotated = TypeExtractor(pipelines).extract_types_from_pipelines()
    nodes = sum(pipelines.values(), Pipeline([])).nodes
    groups = {i.removeprefix("params:") for node in nodes for i in node.inputs
              if i.startswith("params:") and dataclasses.is_dataclass(tree.get(i.removeprefix("params:")))}
    tagged = {"dit"}
    assert set(annotated) == groups - tagged and len(groups) >= 10 and tagged <= groups
    takers = [n for n in nodes if "params:dit" in n.inputs]
    assert [n.name for n in takers] == ["train_dit"] and "params:dit" in takers[0].inputs
    assert typing.get_type_hints(takers[0].func)["cfg"] is Tagged and isinstance(tree.dit, Tagged)
    for key, kind in annotated.items():
        assert isinstance(tree.get(key), kind), key
    hook = ParamsHook()
    hook.after_context_created(type("Context", (), {"config_loader": {"parameters": params}, "project_path": ROOT})())
    node = next(n for n in nodes if n.name == "sample")
    given = hook.before_node_run(node, None, {i: None for i in node.inputs}, False, "run")
    assert given == {"params:sample": tree.sample, "params:diffusion": tree.diffusion, "params:seed": tree.seed,
                     "params:runtime": tree.runtime}


def test_a_run_fails_when_params_yaml_changes_under_it(params, tmp_path):
    """`dvc exp run -S` in the same workspace rewrites params.yaml while a stage runs: the run fails at its end, so
    DVC never records outputs of the old values under the new ones."""
    from unirae_pipeline.runtime.hooks import RunHook

    (tmp_path / "params.yaml").write_text(dump(params), encoding="utf-8")
    hook = RunHook()
    hook.after_context_created(type("Context", (), {"config_loader": {"parameters": params},
                                                    "project_path": tmp_path})())
    hook.after_pipeline_run({}, {}, None, None)  # unchanged: fine
    (tmp_path / "params.yaml").write_text(dump({**params, "seed": 1}), encoding="utf-8")
    with pytest.raises(RuntimeError, match="changed while this run used it"):
        hook.after_pipeline_run({}, {}, None, None)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(MissingConfigException, match="dit/XXL"):
        compose_params(["dit=XXL"], conf_dir=ROOT / "conf")


def test_kedro_reads_params_yaml_and_sets_tf32(params):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        bootstrap_project(ROOT)
        with KedroSession.create(project_path=ROOT) as session:
            assert session.load_context().config_loader["parameters"] == params
        assert torch.backends.cuda.matmul.allow_tf32  # the reference's fp32 policy, set before any node runs
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_dvc_yaml_is_generated_and_fresh():
    result = subprocess.run([sys.executable, "-m", "unirae_pipeline.tools.dvc_stages", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dvc_stages_are_the_kedro_pipelines():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    check = dvc.pop("check_params")  # first: the params checked before any stage removes an output
    assert check["outs"] == [{MARKER: {"cache": False}}] and "runtime" not in check["params"]
    assert list(dvc) == list(STAGES)
    for name, stage in dvc.items():
        assert stage["cmd"] == f"kedro run --pipelines {name}" and MARKER in stage["deps"]
    # `dvc exp run -S dit.depth=N` reruns exactly train_dit -> sample -> evaluate: only train_dit reads `dit`,
    # and the other two depend on its output.
    readers = {name for name, stage in dvc.items() if any(p in ("dit", "dit.depth") for p in stage["params"])}
    assert readers == {"train_dit"}
    assert "data/06_models/dit.safetensors" in dvc["sample"]["deps"]
    assert "data/07_model_output/samples.npz" in dvc["evaluate"]["deps"]
    files = {"params.yaml": yaml.safe_load((ROOT / "params.yaml").read_text())}
    for stage in dvc.values():
        for entry in stage["params"]:
            for file, keys in (entry.items() if isinstance(entry, dict) else [("params.yaml", [entry])]):
                for key in keys:
                    node = files.setdefault(file, yaml.safe_load((ROOT / file).read_text()))
                    for part in key.split("."):
                        node = node[part]  # every declared key exists in its file


@pytest.mark.parametrize("path,value,message", [
    ("dit.hidden_size", 130, "dit.hidden_size / dit.num_heads"),
    ("decoder.num_heads", 3, "decoder.hidden_size / decoder.num_heads"),
    ("train_dit.schedule", "step", "schedule"),
    ("train_dit.guide_at", 5000, "train_dit.guide_at"),
    ("train_rae.unit", "hours", "unit"),
    ("sample.sampler.method", "rk45", "sample.sampler.method"),
    ("latents.dtype", "int8", "latents.dtype"),
    ("trainer.precision", "64", "trainer.precision"),
    ("dit.depth", 0, "dit.depth"),
    # types, named before anything runs
    ("train_dit.batch_size", "abc", "params 'train_dit.batch_size' must be an integer, got 'abc'"),
    ("train_dit.batch_size", 12.5, "'train_dit.batch_size' must be an integer, got 12.5"),
    ("dit.depth", 2.5, "'dit.depth' must be an integer"),
    ("seed", -1, "'seed' must be an integer in [0, 16777215]"),
    ("train_dit.betas", [0.9], "'train_dit.betas' must be a list of 2 numbers"),
    ("sample.sampler.guidance_scale", "abc", "'sample.sampler.guidance_scale' must be a finite number"),
    # non-finite floats pass YAML and every range check (NaN compares false): an all-black sample set, a NaN loss
    ("sample.sampler.guidance_scale", float("inf"), "'sample.sampler.guidance_scale' must be a finite number, got inf"),
    ("train_dit.lr", float("nan"), "'train_dit.lr' must be a finite number, got nan"),
    ("train_dit.betas", [0.9, float("nan")], "'train_dit.betas' must be a list of 2 numbers"),
    ("seed", 2 ** 40, "'seed' must be an integer in [0, 16777215]"),
    ("runtime.compile", "maybe", "'runtime.compile' must be true or false"),
    ("trainer.accelerator", "tpu", "'trainer.accelerator' must be one of 'auto', 'cpu'"),
    ("train_rae.disc.key_depths", [1, "a"], "'train_rae.disc.key_depths' must be a list of integers"),
    ("sample.sampler", "heun", "'sample.sampler' must be a mapping, got 'heun' (did you mean "
                               "sample.sampler.method=heun?)"),
    # values that type-check but cannot work
    ("train_dit.betas", [2, 3], "params 'train_dit': betas must be in [0, 1)"),
    ("dit.mlp_ratio", -1, "dit.mlp_ratio must be > 0"),
    ("sample.sampler.guidance_scale", -2, "sample.sampler.guidance_scale must be >= 1"),
    ("encoder.overrides.num_heads", 3, "encoder.overrides {'patch_size': 4, 'embed_dim': 64, 'depth': 2, "
                                       "'num_heads': 3}: dim should be divisible by num_heads"),
    ("trainer.devices", 0, "trainer.devices must be a count >= 1"),
    ("train_rae.resize_ratio", 0.9, "train_rae.resize_ratio must be >= 1"),  # a resize smaller than the crop
    # across groups
    ("data.image_size", 32, "must equal data.image_size 32: set data.image_size=16"),
    ("data.shapes.num_classes", 1, "data.shapes.num_classes must be >= 2 with fid.extractor classifier"),
    ("data.shapes.train_per_class", 10 ** 8, "data.shapes: num_classes x (train_per_class + val_per_class) = "
                                             "1,000,001,000 images of 16 px exceed the 4 GiB"),  # was allocated first
])
def test_invalid_params_fail_early_naming_the_key(p, path, value, message):
    node = p
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        load_params(p)


def test_a_fixed_batch_larger_than_the_built_in_set_is_refused(p):
    """The built-in set's size is known from params: a batch without fit_batch that exceeds it fails the check."""
    p["fid"]["train"]["batch_size"] = 7000
    load_params(p)  # fitted to the 6000 images by the stage
    p["fid"]["train"]["fit_batch"] = False
    with pytest.raises(ValueError, match="fid.train.batch_size 7000 exceeds the 6000 training images"):
        load_params(p)


def test_imagefolder_errors_name_data_root(p, tmp_path):
    """A missing tree is an error of the stages that read `data`, not of the params' structure."""
    p["data"].update(source="imagefolder", root=str(tmp_path / "missing"), lineage=str(tmp_path / "missing"),
                     shapes=None)
    check_environment(load_params(p), ["train_dit", "sample"])  # stages that never read the tree
    with pytest.raises(FileNotFoundError, match="data.root"):
        check_environment(load_params(p), ["data.image_size"])
    p["data"]["root"] = p["data"]["lineage"] = str(write_folder(tmp_path / "ok", {"a": 2, "b": 1}))
    p["train_rae"]["batch_size"] = p["train_dit"]["batch_size"] = p["fid"]["train"]["batch_size"] = 3
    check_environment(load_params(p), ["data"])


def test_an_image_folder_too_small_or_with_one_class_fails_before_any_stage(p, tmp_path):
    """The first stage (prepare_data reads `data`) counts the tree's files by name, up to the largest batch, and
    names the key that does not fit; the FID classifier needs two classes. Hidden files and non-images do not count."""
    root = write_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    (root / "train" / "a" / "notes.txt").write_text("x", encoding="utf-8")
    (root / "train" / "a" / ".hidden.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    p["data"].update(source="imagefolder", root=str(root), lineage=str(root), shapes=None)
    p["train_rae"]["batch_size"] = p["train_dit"]["batch_size"] = 4
    p["fid"]["train"]["batch_size"] = 5
    check_environment(load_params(p), ["data"])  # the default recipes fit their batches to the set
    for recipe in (p["train_rae"], p["train_dit"], p["fid"]["train"]):
        recipe["fit_batch"] = False
    with pytest.raises(ValueError, match=re.escape(f"fid.train.batch_size 5 exceeds the 4 training images (image "
                                                   f"files in {root}/train): lower it, or set "
                                                   f"fid.train.fit_batch=true")):
        check_environment(load_params(p), ["data"])
    check_environment(load_params(p), ["train_dit"])  # a stage that does not read the tree does not count it
    p["fid"]["extractor"], p["fid"]["inception_weights"] = "inception", str(root / "train" / "a" / "0.png")
    check_environment(load_params(p), ["data"])  # no classifier trained here: its batch size is not drawn
    p["fid"]["extractor"] = "classifier"
    p["fid"]["train"]["batch_size"] = 2
    shutil.rmtree(root / "train" / "b")
    with pytest.raises(ValueError, match="1 class folder.*fid.extractor classifier needs >= 2"):
        check_environment(load_params(p), ["data"])


@pytest.mark.slow  # kedro run subprocesses
def test_missing_files_stop_only_the_stages_that_need_them(tmp_path):
    """Through the real CLI, in a copy of the repository: with Inception weights that are not there, prepare_data
    runs; fid_reference stops before its first node, naming the key."""
    repo = copy_repository(tmp_path / "repo")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    params = ["--params", "fid.extractor=inception,fid.inception_weights=missing.pth"]
    ok = subprocess.run(["kedro", "run", "--pipelines", "prepare_data", *params], cwd=repo, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    stopped = subprocess.run(["kedro", "run", "--pipelines", "fid_reference", *params], cwd=repo, env=env,
                             capture_output=True, text=True)
    assert stopped.returncode != 0 and "fid.inception_weights" in stopped.stdout + stopped.stderr
    assert "Running node" not in stopped.stdout + stopped.stderr


@pytest.mark.slow  # kedro run subprocesses
def test_a_bad_param_stops_kedro_before_any_node(tmp_path):
    """Through the real CLI: a params override that cannot work fails in the hook, naming the key."""
    result = subprocess.run(["kedro", "run", "--pipelines", "train_dit", "--params", "dit.num_heads=3"], cwd=ROOT,
                            capture_output=True, text=True, env={**__import__("os").environ,
                                                                 "KEDRO_DISABLE_TELEMETRY": "true"})
    assert result.returncode != 0
    assert "dit.hidden_size / dit.num_heads" in result.stdout + result.stderr
    assert "Running node" not in result.stdout + result.stderr
    unknown = subprocess.run(["kedro", "run", "--pipelines", "samples"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"})
    said = unknown.stdout + unknown.stderr
    assert unknown.returncode != 0 and "'samples'" in said and "sample" in said.split("Did you mean")[-1]
    assert "ImportError" not in said


def test_a_one_line_edit_reruns_exactly_the_stages_that_run_that_code(tmp_path):
    """A real `dvc status` after one edit: a stage is stale when it runs the edited code, reads or writes the edited
    catalog entry or reads the edited param, and for nothing else: a plot title in a catalog entry's metadata, every
    `runtime` setting, every module of the `runtime` package and every command-line tool stale no stage."""
    repo = copy_repository(tmp_path / "repo")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    pkg = "src/unirae_pipeline/"

    def stale_by(path: str, edit) -> set[str]:
        before = (repo / path).read_text()
        (repo / path).write_text(edit(before))
        try:
            out = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True)
        finally:
            (repo / path).write_text(before)
        assert out.returncode == 0, out.stderr
        stale = set()
        for stage, changes in json.loads(out.stdout).items():
            for change in changes:
                if not isinstance(change, dict):
                    continue
                params = change.get("changed params", {}).get(path, {})
                if path in change.get("changed deps", {}) or params:
                    stale.add(stage.split(":")[-1])
        return stale

    def comment(text: str) -> str:
        return text + "\n# an edit\n"

    # check_params (seconds, its marker unchanged) re-checks the params whenever the code that builds them changes
    assert stale_by(pkg + "models/dit.py", comment) == {"check_params", "train_dit", "train_guide", "sample"}
    assert stale_by(pkg + "models/decoder.py", comment) == {"check_params", "train_rae", "sample"}
    assert stale_by(pkg + "models/encoder.py", comment) == {"check_params", "cache_latents", "train_rae"}
    # grab-bag modules split along stage lines: the code one stage runs stales that stage alone
    assert stale_by(pkg + "diffusion/sampling.py", comment) == {"sample"}
    assert stale_by(pkg + "data/moments.py", comment) == {"latent_stats"}
    assert stale_by(pkg + "data/latent_rows.py", comment) == {"train_dit", "train_guide"}  # both train a DiT
    assert stale_by(pkg + "data/crops.py", comment) == {"train_rae"}
    # stage 1's loss networks never stale the encoding of the latents (on ImageNet: a re-encode)
    assert stale_by(pkg + "models/discriminator.py", comment) == {"check_params", "train_rae"}
    # interop: the FD networks' weights readers run in fid_reference alone; the diffusers export in no stage
    assert stale_by(pkg + "interop/fid_weights.py", comment) == {"fid_reference"}
    assert stale_by(pkg + "interop/diffusers_export.py", comment) == set()
    # how a run runs (runtime/: no result can change) and the command-line tools (tools/: no stage runs them)
    untracked = sorted([*(repo / pkg / "runtime").glob("*.py"), *(repo / pkg / "tools").glob("*.py")])
    assert len(untracked) >= 12
    originals = {f: f.read_text() for f in untracked[1:]}
    try:  # every such module edited at once: one `dvc status`
        for f, text in originals.items():
            f.write_text(comment(text))
        assert stale_by(str(untracked[0].relative_to(repo)), comment) == set()
    finally:
        for f, text in originals.items():
            f.write_text(text)
    catalog = "conf/base/catalog.yml"
    titled = "metadata: {dvc: plots, x: step, y: loss, title: DiT loss}"
    assert stale_by(catalog, lambda t: t.replace("metadata: {dvc: plots, x: step, y: loss}", titled, 1)) == set()
    assert stale_by(catalog, lambda t: t.replace("dit_loss.csv", "dit_curve.csv")) == {"train_dit"}

    def other_runtime(text: str) -> str:
        params = yaml.safe_load(text)
        params["runtime"] = {"num_workers": 3, "log_every_n_steps": 5, "checkpoint_every_n_steps": 7, "compile": True,
                             "device": "cpu", "scratch": "/tmp/elsewhere", "logs": "tensorboard"}
        return yaml.safe_dump(params, sort_keys=False)

    assert stale_by("params.yaml", other_runtime) == set()  # runtime settings: never a result
    readers = {name for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items()
               if "seed" in stage["params"]}
    reseed = lambda t: re.sub(r"(?m)^seed: 0$", "seed: 1", t, count=1)  # noqa: E731 - the top-level key
    assert len(readers) > 5 and stale_by("params.yaml", reseed) == readers


def test_check_params_refuses_every_file_it_cannot_read_before_any_stage(p, tmp_path, monkeypatch, capsys):
    """`python -m unirae_pipeline.config` (DVC's first stage): a data.root that is not there, not set, not readable
    or holding a name DVC cannot hash, a weights file that is not there, and a params file with YAML aliases are
    refused in one line naming the key or the line, the marker left as it was; the same params with the files
    present pass."""
    from unirae_pipeline.config.params import main
    from unirae_pipeline.tools.compose import dump

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker.txt"

    def check(params: dict | str) -> tuple[int, str]:
        (tmp_path / "params.yaml").write_text(params if isinstance(params, str) else dump(params), encoding="utf-8")
        code = main([str(marker)])
        return code, capsys.readouterr().err

    root = write_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    p["data"].update(source="imagefolder", root=str(tmp_path / "missing"), lineage=str(tmp_path / "missing"),
                     shapes=None)
    p["train_rae"]["batch_size"] = p["train_dit"]["batch_size"] = p["fid"]["train"]["batch_size"] = 2
    code, said = check(p)
    assert code == 2 and f"data.root: ImageFolder path '{tmp_path / 'missing'}' does not exist" in said
    p["data"]["root"] = p["data"]["lineage"] = "???"  # Hydra's "not set": data=folder without data.root
    assert "add -S data.root=/path/to/images" in check(p)[1]
    p["data"]["root"] = p["data"]["lineage"] = str(root)
    with monkeypatch.context() as m:  # (root reads everything: the permission is simulated)
        m.setattr("os.access", lambda path, mode: False)
        assert "cannot be read by this user" in check(p)[1]
    assert not marker.exists()
    assert check(p) == (0, "") and marker.is_file()
    odd = os.fsencode(root / "train" / "a") + b"/caf\xe9.png"  # a latin-1 name
    with open(odd, "wb") as f:
        f.write((root / "train" / "a" / "0.png").read_bytes())
    code, said = check(p)
    assert code == 2 and "caf\\xe9.png" in said and "is not UTF-8, which DVC cannot hash" in said
    os.remove(odd)
    p["fid"].update(extractor="inception", inception_weights=str(tmp_path / "pt_inception.pth"))
    code, said = check(p)
    assert code == 2 and "fid.inception_weights" in said and "not found" in said
    p["fid"].update(extractor="classifier", inception_weights=None)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9))
    code, said = check(bomb)  # four to the ninth copies of a list, were it expanded
    assert code == 2 and "line 1: YAML anchors and aliases" in said and len(said) < 1000
    assert check(p)[0] == 0
