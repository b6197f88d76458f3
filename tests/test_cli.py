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


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out == f"tabvlm {version('tabvlm')}\n"


def test_version_falls_back_to_the_package_when_not_installed(capsys, monkeypatch):
    import importlib.metadata

    import tabvlm

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(tabvlm, "__version__", "9.9.9")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "tabvlm 9.9.9\n"
