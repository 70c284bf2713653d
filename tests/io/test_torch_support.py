"""The supported torch range: an older torch is refused at import with one message naming the version
and the fix (a traceback from inside a forward pass is what it would give otherwise)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zipar.torch_support import OLDEST, TorchTooOld, check_torch_version, parse_version

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, expected", [("2.14.1+cu130", (2, 14)), ("2.9.1", (2, 9)), ("2.16.0.dev20261201", (2, 16)),
                                            ("10.0", (10, 0))])
def test_versions_are_read_as_major_minor(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("ok", ["2.9.0", "2.9.1+cu128", "2.13.0+cpu", "2.15.0", "2.16.0a0+git1234", "3.0.0", "local-build"])
def test_the_supported_range_and_newer_pass(ok):
    check_torch_version(ok)


@pytest.mark.parametrize("old", ["2.8.0", "2.5.1+cu121", "1.13.1"])
def test_an_older_torch_is_refused_with_the_version_and_the_fix(old):
    with pytest.raises(TorchTooOld) as info:
        check_torch_version(old)
    message = str(info.value)
    assert old in message and f"torch>={OLDEST[0]}.{OLDEST[1]}" in message and "pip install --upgrade" in message


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_engine_with_an_old_torch_names_the_problem():
    r = _run("import torch; torch.__version__ = '2.8.0'\nimport zipar")
    assert r.returncode != 0
    assert "ZipAR needs torch 2.9 or newer, but this Python has torch 2.8.0" in r.stderr


def test_the_command_line_with_an_old_torch_prints_one_line():
    r = _run("import runpy, sys, torch; torch.__version__ = '2.8.0'; sys.orig_argv = [sys.executable, '-m', 'zipar']\n"
             "runpy.run_module('zipar', run_name='__main__')")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: ZipAR needs torch 2.9")


def test_a_script_importing_the_engine_with_an_old_torch_gets_the_import_error(tmp_path):
    """Not the command line (no -m in the interpreter's arguments): the ImportError itself, for the caller."""
    script = tmp_path / "user_script.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\nimport torch; torch.__version__ = '2.8.0'\n"
                      "import zipar\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "TorchTooOld" in r.stderr and "ZipAR needs torch 2.9 or newer" in r.stderr
