"""Export this pipeline's RAE as a diffusers `AutoencoderRAE` folder (`from_pretrained` reads it):

    python -m unirae_pipeline.tools.export_diffusers logs/rae-diffusers  # pip install -e ".[diffusers]" first

The encoder is params.yaml's `encoder`, its weights taken from `encoder.weights` as the file holds them (diffusers
resizes the position table itself, so the original one is needed: a local file or a diffusers folder, not `hub` or
`none`); the decoder is the one trained here (`--decoder`) and the latent statistics `--stats`, normalized as
`diffusion.latent_norm` says (what the DiT was trained on). The conversion is `interop.diffusers_export`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from ..config.build import build
from ..interop.diffusers_export import export
from ..models.encoder import EncoderConfig
from ..models.serialization import read_model_file, read_state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder to write (config.json + safetensors)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="its `encoder` group and diffusion.latent_norm")
    parser.add_argument("--decoder", type=Path, default=Path("data/06_models/decoder.safetensors"))
    parser.add_argument("--stats", type=Path, default=Path("data/04_feature/latent_stats.safetensors"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        raw = yaml.safe_load(args.params.read_text(encoding="utf-8"))
        cfg = build(EncoderConfig, raw["encoder"], "encoder")
        latent_norm = raw.get("diffusion", {}).get("latent_norm", "mean_var")
        stats = read_state_dict(args.stats, "--stats")
        if not {"mean", "var"} <= set(stats):
            raise KeyError(f"--stats {args.stats}: needs 'mean' and 'var' (latent_stats' output)")
        decoder = read_model_file(args.decoder, "decoder", "--decoder (train_rae's output)")
        export(cfg, decoder, stats, latent_norm, args.out)
    except (FileNotFoundError, KeyError, ValueError, ImportError) as err:
        sys.stderr.write(f"export_diffusers: {err.args[0] if err.args else err}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
