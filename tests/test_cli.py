"""The headless CLI: stats on the real benchmark and on the embedded default, clear errors on bad input."""
from __future__ import annotations

import json
import subprocess
import sys

from qbert4rec_lib.cli import main


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
