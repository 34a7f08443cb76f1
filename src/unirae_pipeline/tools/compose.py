"""Compose params.yaml from conf/ with Hydra, exactly as `dvc exp run` does (hydra.enabled in .dvc/config).

`python -m unirae_pipeline.tools.compose [override ...]` rewrites params.yaml, e.g. after editing a preset in conf/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf


def compose_params(overrides: list[str] | None = None, conf_dir: Path | None = None) -> dict:
    """The composed config as plain data; `conf_dir` defaults to ./conf (kedro and dvc run from the root)."""
    with initialize_config_dir(str((conf_dir or Path("conf")).resolve()), version_base=None):
        cfg = compose("config", overrides=overrides or [])
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)


def dump(params: dict) -> str:
    """The same YAML text DVC writes (OmegaConf.to_yaml keeps key order)."""
    return OmegaConf.to_yaml(OmegaConf.create(params))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dit=S dit.depth=8")
    parser.add_argument("--output", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    args.output.write_text(dump(compose_params(args.overrides)), encoding="utf-8")


if __name__ == "__main__":
    main()

