"""The README's Quick start holds exactly the two commands, and CI runs the second one."""

from __future__ import annotations

import re

from .conftest import ROOT


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quick start\n+```bash\n(.*?)^```", text, re.M | re.S)
    assert match, "README must start with a '## Quick start' heading and one bash block"
    assert text.startswith("## Quick start")
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_quick_start_has_two_commands_and_ci_runs_the_second():
    commands = quick_start()
    assert len(commands) == 2
    assert commands[0].endswith("dvc repro") and "scripts/setup.sh" in commands[0]
    setup = ("#", "set ", "cd ", "export ")  # the script's own preamble
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(setup)]
    assert ci == [commands[1]]
