"""The headless CLI: stats on the real benchmark and on the embedded default, clear errors on bad input."""
from __future__ import annotations

import json
import subprocess
import sys

from qbert4rec_lib.kit.cli import main


def test_stats_json_on_beauty(beauty_path, capsys):
    assert main(["stats", str(beauty_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["users"], out["items"], out["interactions"]) == (22363, 12101, 198502)
    assert out["modalities"]["image"] is False and out["modalities_absent"] == ["image"]
    assert len(out["load_report"]["repairs"]) >= 3


def test_stats_on_embedded_default(capsys):
    assert main(["stats", "default", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modalities"]["image"] is True and out["modalities_absent"] == []
    assert out["users"] > 1000 and out["items"] > 500


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(capsys):
    assert main(["quantize", "default", "--set", "rqvae.levles=4"]) == 2
    assert "levles" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "qbert4rec_lib", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "reproduce" in out.stdout


def test_console_command_is_declared_and_is_the_module_main():
    """`qbert4rec` (pyproject's console script) and `python -m qbert4rec_lib` run the same `cli.main`."""
    import ast
    import importlib.metadata as md
    import tomllib
    from pathlib import Path

    import qbert4rec_lib.kit.cli as cli

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    value = project["scripts"]["qbert4rec"]
    assert md.EntryPoint("qbert4rec", value, "console_scripts").load() is cli.main
    # __main__.py calls that same function (read, not imported: importing it would run the CLI)
    tree = ast.parse((root / "qbert4rec_lib" / "__main__.py").read_text())
    imported = {("." * n.level + (n.module or ""), a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert (value.split(":")[0].removeprefix("qbert4rec_lib"), "main") in imported
    # where this venv has the kit installed with pip, its metadata declares the same entry point
    installed = [e for e in md.entry_points(group="console_scripts") if e.name == "qbert4rec"]
    assert all(e.value == value for e in installed)


def test_out_base_names_keep_their_dots():
    from pathlib import Path

    from qbert4rec_lib.kit.commands import _out_file

    assert _out_file("figures/results/cold_lr0.5", ".json") == Path("figures/results/cold_lr0.5.json")
    assert _out_file("figures/results/cold", ".md") == Path("figures/results/cold.md")
    assert _out_file("figures/results/cold.json", ".md") == Path("figures/results/cold.md")
