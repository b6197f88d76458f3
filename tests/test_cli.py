import subprocess
import sys

from tabvlm.cli import VERBS, main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unknown_verb_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown verb 'frobnicate'" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "tabvlm.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: tabvlm" in out.stdout
