"""scripts/setup.sh: one line a step on the terminal, apt's and pip's output in .venv/setup.log.

Run against a copy of the script in a temporary folder, with a fake python (it makes the venv and
answers pip) and a fake dpkg (every Debian package already installed): nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# pip's chatter, as setuptools prints it during `pip install -e .`
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi
echo "fake python $*"
echo "  !! Please be careful with folders in your working directory with the same name" >&2
if [ -n "${FAIL_ON:-}" ] && [[ "$*" == *"$FAIL_ON"* ]]; then
  echo "ERROR: Could not find a version that satisfies the requirement" >&2
  exit 1
fi
exit 0
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("bash") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs bash and sha256sum")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "bin").mkdir()
    _executable(tmp_path / "bin" / "dpkg", "#!/bin/sh\nexit 0\n")  # every package is installed
    _executable(tmp_path / "bin" / "apt-get", "#!/bin/sh\necho apt-get ran; exit 1\n")  # so never runs
    _executable(tmp_path / "bin" / "fakepython", FAKE_PYTHON)
    return tmp_path


def _setup(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{repo / 'bin'}:{os.environ['PATH']}",
        "PYTHON": str(repo / "bin" / "fakepython"),
        **env,
    }
    return subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_few_clear_lines_the_rest_in_the_log_and_fast_when_nothing_changed(repo: Path) -> None:
    first = _setup(repo)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"setup: creating the virtualenv .venv ({repo / 'bin' / 'fakepython'})",
        "setup: upgrading pip",
        "setup: installing tabvlm and its dev extras (pip install -e .[dev])",
        "setup: done (3 steps; the full log: .venv/setup.log)",
    ]
    assert first.stderr == ""
    log = (repo / ".venv" / "setup.log").read_text()
    assert "Please be careful with folders" in log and "fake python -m pip install -e .[dev]" in log

    again = _setup(repo)  # the stamp matches: no pip, and the last log is kept
    assert (again.returncode, again.stdout, again.stderr) == (0, "setup: up to date (.venv)\n", "")
    assert (repo / ".venv" / "setup.log").read_text() == log

    (repo / "pyproject.toml").write_text('[project]\nname = "y"\n')  # a change: pip runs again
    assert "setup: installing tabvlm" in _setup(repo).stdout


def test_a_failed_step_prints_the_logs_tail_and_its_path_and_is_retried(repo: Path) -> None:
    failed = _setup(repo, FAIL_ON="-e .[dev]")
    assert failed.returncode == 1
    assert "setup: failed: pip install -e .[dev]. The last lines of .venv/setup.log:" in failed.stderr
    assert "  | ERROR: Could not find a version that satisfies the requirement" in failed.stderr
    assert "setup: the whole log: .venv/setup.log" in failed.stderr
    assert "setup: done" not in failed.stdout
    retried = _setup(repo)  # no stamp was written: the next run installs again
    assert retried.returncode == 0 and "setup: installing tabvlm" in retried.stdout


def test_missing_debian_packages_are_named_and_apts_output_logged(repo: Path) -> None:
    _executable(repo / "bin" / "dpkg", '#!/bin/sh\n[ "$2" != fonts-noto-cjk ]\n')  # one missing
    _executable(repo / "bin" / "sudo", '#!/bin/sh\nexec "$@"\n')
    _executable(
        repo / "bin" / "apt-get",
        "#!/bin/sh\necho \"apt-get $*\"\necho 'debconf: delaying package configuration' >&2\n",
    )
    done = _setup(repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "setup: apt-get install fonts-noto-cjk"
    assert "debconf" not in done.stdout + done.stderr
    log = (repo / ".venv" / "setup.log").read_text()
    assert "debconf: delaying package configuration" in log
    assert "apt-get install -y --no-install-recommends fonts-noto-cjk" in log
