"""The command-line mechanism: a light start-up, one module imported per run."""

from __future__ import annotations

import subprocess
import sys

from crossview.cli import COMMANDS, load_command


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_help_and_version_import_no_heavy_library():
    modules = _modules_after("import crossview.cli as cli\ncli.build_parser().format_help()")
    assert not modules & {"torch", "rasterio", "osmnx", "numpy"}


def test_a_run_imports_only_its_own_command():
    modules = _modules_after("import crossview.cli as cli\ncli.build_parser(selected='synth')")
    assert "crossview.data.synth.command" in modules
    assert not modules & {"crossview.fetch", "crossview.train", "crossview.evaluate", "crossview.bench", "torch"}


def test_every_listed_command_exists_under_its_name():
    for name in COMMANDS:
        command = load_command(name)
        assert command.name == name and command.description and callable(command.run)
