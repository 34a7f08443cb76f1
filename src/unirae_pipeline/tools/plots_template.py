"""Write the page template that makes `dvc plots show` / `dvc plots diff` draw their charts offline:

    python -m unirae_pipeline.tools.plots_template <folder of vega.min.js, vega-lite.min.js, vega-embed.min.js>

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN, so on a machine without internet (the setting this
pipeline is built for) only the image plots appear. `scripts/setup.sh` takes the three libraries from the npm registry
at the versions DVC's own page names and runs this; the template (`.dvc/plots.html`, which `.dvc/config` names under
`plots.html_template`) holds them inline, so every page DVC writes from it is self-contained.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..fileio import atomic_file

log = logging.getLogger(__name__)
LIBRARIES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # in load order
TEMPLATE = Path(".dvc/plots.html")
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{libraries}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page(folder: Path) -> str:
    """The template: DVC's page with the libraries inline instead of its `{scripts}` (the CDN tags)."""
    scripts = []
    for name in LIBRARIES:
        code = (folder / name).read_text(encoding="utf-8")
        if "</script" in code.lower() or "{plot_divs}" in code:
            raise ValueError(f"{folder / name} cannot be inlined in an HTML template")
        scripts.append(f"    <script>/* {name} */\n{code}\n    </script>")
    return PAGE.format(libraries="\n".join(scripts), refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help=f"holding {', '.join(LIBRARIES)}")
    parser.add_argument("--out", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        text = page(args.folder)
    except (OSError, ValueError) as err:
        sys.stderr.write(f"plots_template: {err}\n")
        return 2
    with atomic_file(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s (%.0f kB): dvc plots draw offline", args.out, len(text) / 1e3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
