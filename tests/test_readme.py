"""The README's Quick start holds exactly the two commands, and CI runs the second one; the README is a short front
door whose links reach every page of docs/; every command of both runs in some test."""

from __future__ import annotations

import copy
import importlib
import re

import yaml

from .conftest import ROOT, documentation


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quick start\n+```bash\n(.*?)^```", text, re.M | re.S)
    assert match, "README must open with a '## Quick start' heading and one bash block"
    assert text.startswith("# UniRAE\n") and text[: match.start()].count("\n") <= 6  # a title and one sentence first
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_quick_start_has_two_commands_and_ci_runs_the_second():
    commands = quick_start()
    assert len(commands) == 2
    assert commands[0].endswith("dvc repro") and "scripts/setup.sh" in commands[0]
    setup = ("#", "set ", "cd ", "export ")  # the script's own preamble
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(setup)]
    assert ci == [commands[1]]


def _bash_lines() -> list[str]:
    """Every command line of the README and of docs/."""
    text = documentation()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


# params that hold a pretrained file or a data path: with a value, it must exist
PATH_PARAMS = ("data.root", "encoder.weights", "train_rae.lpips.vgg_weights", "train_rae.lpips.heads_weights",
               "train_rae.disc.weights", "fid.inception_weights", "fid.reference_npz", "fid.dinov2_weights")


def _get(params: dict, key: str):
    for part in key.split("."):
        params = params[part]
    return params


def test_imagenet_commands_compose_and_every_file_they_need_is_documented(tmp_path, monkeypatch):
    """Each `dvc exp run -S profile=imagenet ...` line of the README: its targets are stages, its overrides compose,
    a missing file is a clear error, and with the documented files in place every params group validates."""
    import shlex

    import pytest
    import yaml

    from unirae_pipeline.config.params import check_environment, load_params
    from unirae_pipeline.tools.compose import compose_params

    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    readme = documentation()
    lines = [line for line in _bash_lines() if line.startswith("dvc exp run") and "profile=imagenet" in line]
    assert len(lines) >= 5
    for n, line in enumerate(lines):
        tokens = shlex.split(line.split("  #")[0])[3:]
        overrides = [tokens[i + 1] for i, t in enumerate(tokens) if t == "-S"]
        targets = [t for i, t in enumerate(tokens) if t != "-S" and (i == 0 or tokens[i - 1] != "-S")]
        assert set(targets) <= stages, line
        params = compose_params(overrides, conf_dir=ROOT / "conf")
        assert params["dit"]["hidden_size"] == 1152 and params["train_rae"]["gan_weight"] == 0.75
        paths = {key: _get(params, key) for key in PATH_PARAMS if _get(params, key) is not None}
        assert all(f"`{value}`" in readme or f"={value}" in line for value in paths.values()), paths
        work = tmp_path / str(n)
        work.mkdir()
        monkeypatch.chdir(work)
        tree = load_params(params)  # the structure; the files each stage needs are checked when it starts
        with pytest.raises(FileNotFoundError, match="data.root"):
            check_environment(tree, params)
        for key, value in paths.items():
            target = work / value
            target.parent.mkdir(parents=True, exist_ok=True)
            target.mkdir() if key == "data.root" else target.write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="data.root: expected a 'train' folder"):
            check_environment(tree, params)
        for name in ("n01440764", "n01443537"):  # two classes, as many files (by name) as the largest batch
            (work / paths["data.root"] / "train" / name).mkdir(parents=True)
            for i in range(max(tree.get(key) for key in tree.batch_keys())):
                (work / paths["data.root"] / "train" / name / f"{i}.JPEG").write_bytes(b"")
        check_environment(tree, params)


def test_experiment_commands_are_the_ones_the_e2e_tests_run():
    """The README's curated `dvc exp show` line is the one the e2e sweep test runs (quotes aside), and every other
    experiment command there is one the e2e tests exercise."""
    from .test_e2e import EXP_SHOW

    lines = _bash_lines()
    shown = [line for line in lines if line.startswith("dvc exp show")]
    assert [line.replace("'", "") for line in shown] == [EXP_SHOW]
    e2e = (ROOT / "tests" / "test_e2e.py").read_text()
    for command in ("dvc exp run --queue", "dvc queue start", "dvc plots diff", "dvc exp ls", "dvc exp run -S",
                    "dvc exp apply"):
        assert any(command in line for line in lines), command
        assert f'"{command.split()[1]}", "{command.split()[2]}"' in e2e, command


# Every command of the README, by prefix, and the test that runs it. GPU or cluster launches cannot run here: their
# params are composed and validated below instead, and they share the entry point that the torchrun test launches.
# each README command prefix -> the test (module.function) that runs it
EXERCISED = {
    "bash scripts/setup.sh": "test_readme.test_quick_start_has_two_commands_and_ci_runs_the_second",  # and CI itself
    "dvc exp run -S profile=imagenet":
        "test_readme.test_imagenet_commands_compose_and_every_file_they_need_is_documented",
    "dvc exp run -S method=raev2": "test_pipelines.test_the_raev2_method_learns_on_the_embedded_default",
    "dvc exp run -S profile=raev2": "test_raev2.test_profile_raev2_equals_raev2s_three_configs",
    "dvc exp run --queue": "test_e2e.test_queued_sweep_curated_table_and_plots_of_every_experiment",
    "dvc exp run -S": "test_e2e.test_exp_run_depth_reruns_only_the_dit_stages",
    "dvc queue start": "test_e2e.test_queued_sweep_curated_table_and_plots_of_every_experiment",
    "dvc exp show": "test_e2e.test_queued_sweep_curated_table_and_plots_of_every_experiment",
    "dvc plots diff": "test_e2e.test_queued_sweep_curated_table_and_plots_of_every_experiment",
    "dvc exp apply": "test_e2e.test_queued_sweep_curated_table_and_plots_of_every_experiment",
    "kedro run --pipelines sample --params": "test_e2e.test_official_weights_profile_runs_the_readme_sample_lines",
    "kedro run --pipelines": "test_e2e.test_kedro_runs_one_pipeline_on_its_own",
    "torchrun": "test_e2e.test_torchrun_launches_the_same_stage",
    "srun python -m unirae_pipeline": "test_e2e.test_torchrun_launches_the_same_stage",
    "bash bench/gpu_run.sh": "test_bench.test_the_prepared_gpu_run_works_small_on_the_cpu",
    "PYTHONPATH=src python bench/bench_dit.py": "test_bench.test_bench_dit_tiny",
    "PYTHONPATH=src python bench/bench_data.py": "test_bench.test_bench_data_tiny",
    "python -m unirae_pipeline.tools.reconstruct /path/to/images logs/recon --diffusers":
        "test_reconstruct.test_a_folder_through_a_diffusers_rae_equals_its_own_reconstructions",
    "python -m unirae_pipeline.tools.reconstruct /path/to/images logs/recon --official":
        "test_reconstruct.test_a_folder_through_a_released_reference_decoder",
    "python -m unirae_pipeline.tools.reconstruct": "test_reconstruct.test_a_folder_through_the_rae_trained_here",
    "pip install -e \".[diffusers]\" && python -m unirae_pipeline.tools.export_diffusers":
        "test_encoders.test_export_to_diffusers_round_trips",
    "dvc remote add": "test_e2e.test_dvc_remote_shares_the_artefacts",
    "dvc push": "test_e2e.test_dvc_remote_shares_the_artefacts",
}


def test_every_readme_command_is_exercised_and_its_params_are_valid():
    import shlex

    from unirae_pipeline.config.params import load_params
    from unirae_pipeline.tools.compose import compose_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for line in _bash_lines():
        if line.startswith("#"):
            continue  # #SBATCH directives
        command = line.split("  #")[0].strip()
        prefix = next((p for p in EXERCISED if command.startswith(p)), None)
        assert prefix, f"README command not exercised by any test: {command}"
        module, function = EXERCISED[prefix].rsplit(".", 1)
        assert callable(getattr(importlib.import_module(f"tests.{module}"), function, None)), EXERCISED[prefix]
        tokens = shlex.split(command.replace("$(", "").replace(")", ""))
        if "--params" in tokens:  # kedro's runtime params: must name real keys with valid values
            merged = copy.deepcopy(params)
            for item in tokens[tokens.index("--params") + 1].split(","):
                key, value = item.split("=")
                *path, leaf = key.split(".")
                node = merged
                for part in path:
                    node = node[part]
                assert leaf in node, f"{command}: unknown param {key}"
                node[leaf] = yaml.safe_load(value)
            load_params(merged)
        elif command.startswith("dvc exp run -S") and "profile=imagenet" not in command:
            overrides = [tokens[i + 1] for i, t in enumerate(tokens) if t == "-S" and "choice(" not in tokens[i + 1]]
            load_params(compose_params(overrides, conf_dir=ROOT / "conf"))


def test_the_readme_is_a_short_front_door_whose_links_reach_every_doc():
    """About 150-200 lines: the rest lives in docs/, every page of which the README links; every relative link of the
    README and docs/ resolves to a file of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") <= 200
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert {"architecture.md", "imagenet.md", "official-weights.md", "departures.md", "clusters.md", "models.md",
            "troubleshooting.md"} <= {p.name for p in pages}
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", readme))
    assert linked == {f"docs/{p.name}" for p in pages}
    for page in [ROOT / "README.md", *pages]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to a missing {target}"
