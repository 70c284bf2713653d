"""Nothing lost: every output is checked before the work and written whole or not at all.

Each bad case asserts the exact error, a message naming the problem and the fix, that no model
was loaded (the check came first), and that no file was created, changed or left behind.
"""
from __future__ import annotations

import argparse
import errno
import os

import numpy as np
import pytest
import torch

from helpers.full_disk import FullDisk
from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar import api
from zipar.io import outputs
from zipar.cli import main
from zipar.errors import ZipARError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    vq = make_tiny_vq(seed=0)
    save_official_vq(vq, d / "vq_ds16_c2i.pt")
    save_official_gpt(make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size), d / "c2i_T_64.pt")
    return d


def generate(files, *extra) -> list[str]:
    return ["generate", "--ar-model", str(files / "c2i_T_64.pt"), "--vq-model", str(files / "vq_ds16_c2i.pt"),
            "--class-id", "1", "--window", "2", *[str(e) for e in extra]]


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) with its bytes."""
    out = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a model is read: output problems must be found before that."""
    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(api, "load_ar_model", refuse)
    monkeypatch.setattr(api, "load_vq", refuse)


def refused(argv, capsys, *needles) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------------------- names settled before checks

def test_tokens_out_without_suffix_does_not_replace_the_npy_numpy_would_write(files, tmp_path, capsys, no_loading):
    (tmp_path / "grid.npy").write_bytes(b"user data")
    before = snapshot(tmp_path)
    refused(generate(files, "--tokens-out", tmp_path / "grid"), capsys, f"{tmp_path / 'grid.npy'} already exists",
            "--overwrite")
    assert snapshot(tmp_path) == before


def test_tokens_out_gets_npy_added_and_overwrite_replaces_it(files, tmp_path, capsys):
    (tmp_path / "grid.npy").write_bytes(b"user data")
    assert main(generate(files, "--tokens-out", tmp_path / "grid", "--overwrite")) == 0
    assert np.load(tmp_path / "grid.npy").shape == (1, 4, 4)
    assert sorted(snapshot(tmp_path)) == ["grid.npy"]  # no "grid" and no temporary left


@pytest.mark.parametrize("out,stats,tokens", [("s.png", "s.png", None), (None, "t.npy", "t"), ("a.png", "./a.png", None),
                                              ("x/../s.png", "s.png", None)])
def test_two_outputs_naming_one_file_are_refused(files, tmp_path, capsys, no_loading, out, stats, tokens):
    argv = generate(files, "--stats-json", tmp_path / stats)
    if out:
        argv += ["--out", str(tmp_path / out)]
    if tokens:
        argv += ["--tokens-out", str(tmp_path / tokens)]
    (tmp_path / "x").mkdir()
    before = snapshot(tmp_path)
    refused(argv, capsys, "both name", "give each output its own file name")
    assert snapshot(tmp_path) == before


def test_numbered_images_are_checked_one_by_one(files, tmp_path, capsys, no_loading):
    (tmp_path / "a_1.png").write_bytes(b"user image")
    before = snapshot(tmp_path)
    refused(generate(files, "--batch", 2, "--out", tmp_path / "a.png"), capsys, f"{tmp_path / 'a_1.png'} already exists")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- checked before the work

@pytest.mark.parametrize("name,needles", [
    ("out", ["has no extension", "end the name in", "out.png"]),
    ("out.gif", ["has '.gif'", "not an image format", ".png"]),
    ("out.npy", ["has '.npy'", "not an image format"]),
])
def test_out_needs_a_known_image_format(files, tmp_path, capsys, no_loading, name, needles):
    refused(generate(files, "--out", tmp_path / name), capsys, "--out", *needles)
    assert snapshot(tmp_path) == {}


def test_out_that_is_a_folder_is_refused(files, tmp_path, capsys, no_loading):
    (tmp_path / "pics.png").mkdir()
    for flag in ("--out", "--stats-json"):
        refused(generate(files, flag, tmp_path / "pics.png"), capsys, "is a folder", "give a file name inside it")
    (tmp_path / "d.npy").mkdir()
    refused(generate(files, "--tokens-out", tmp_path / "d"), capsys, "d.npy is a folder")  # the name numpy writes
    assert snapshot(tmp_path) == {}


def test_out_under_a_file_is_refused(files, tmp_path, capsys, no_loading):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    refused(generate(files, "--stats-json", tmp_path / "notes.txt" / "s.json"), capsys, "is a file, not a folder",
            "choose another location")
    assert snapshot(tmp_path) == before


def test_unwritable_folder_is_found_before_loading(files, tmp_path, capsys, no_loading, monkeypatch):
    """A folder we may not write into (read-only mount, permissions): probed with a real file. Root
    ignores permission bits, so the probe's failure is injected here."""
    real = outputs.tempfile.mkstemp

    def read_only(*args, **kwargs):
        if str(kwargs.get("dir", "")).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    refused(generate(files, "--out", tmp_path / "ro" / "a.png"), capsys, "cannot write into", "Permission denied",
            "choose a folder you can write to")
    assert snapshot(tmp_path) == {}


def test_outputs_in_missing_folders_are_created(files, tmp_path, capsys):
    argv = generate(files, "--out", tmp_path / "new" / "a.png", "--tokens-out", tmp_path / "t" / "t",
                    "--stats-json", tmp_path / "s" / "deep" / "s.json")
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(snapshot(tmp_path)) == ["new/a.png", "s/deep/s.json", "t/t.npy"]


# ----------------------------------------------------------------------------- written whole or not at all

class Boom(RuntimeError):
    pass


def failing_writer(after: int):
    def write(f):
        f.write(b"x" * after)
        raise Boom("disk full")
    return write


def test_a_writer_failing_half_way_keeps_the_old_file(tmp_path):
    target = tmp_path / "image.png"
    target.write_bytes(b"the user's old image")
    with pytest.raises(Boom):
        outputs.write_atomic(target, failing_writer(1000), overwrite=True)
    assert snapshot(tmp_path) == {"image.png": b"the user's old image"}


def test_a_writer_failing_on_a_new_name_leaves_nothing_and_the_rerun_works(tmp_path):
    target = tmp_path / "new.npy"
    with pytest.raises(Boom):
        outputs.write_atomic(target, failing_writer(10), overwrite=False)
    assert snapshot(tmp_path) == {}
    outputs.write_npy(target, np.arange(3), overwrite=False)
    assert np.load(target).tolist() == [0, 1, 2] and sorted(snapshot(tmp_path)) == ["new.npy"]


# ----------------------------------------------------------------------------- a write the system refuses

def one_line(code, err) -> str:
    """The run failed with one ``error:`` line, stderr's last (after any progress report), no traceback."""
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


WRITE_ERRORS = [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EACCES] + (
    [errno.EDQUOT] if hasattr(errno, "EDQUOT") else [])


@pytest.mark.parametrize("at", ["write", "fsync", "replace"])
@pytest.mark.parametrize("code", WRITE_ERRORS, ids=lambda c: errno.errorcode[c])
def test_a_refused_write_keeps_the_old_file_and_says_so(tmp_path, monkeypatch, at, code):
    target = tmp_path / "image.png"
    target.write_bytes(b"the user's old image")
    disk = FullDisk(monkeypatch, match="image.png", code=code, at=at)
    with pytest.raises(outputs.WriteFailed) as caught:
        outputs.write_bytes(target, b"new bytes " * 100)
    assert disk.hits == ["image.png"]  # the fault was injected where asked
    message = str(caught.value)
    assert isinstance(caught.value, ZipARError) and "\n" not in message
    assert message.startswith(f"could not write {target}: ")
    assert "the old file is intact (nothing was overwritten) and no partial file was left" in message
    assert os.strerror(code) in message
    if code == errno.ENOSPC:
        assert f"the disk is full ({os.strerror(code)})" in message and "free some space" in message
    else:
        assert f"({errno.errorcode[code]})" in message and "disk is full" not in message
    assert snapshot(tmp_path) == {"image.png": b"the user's old image"}


def test_a_refused_write_of_a_new_file_leaves_nothing_and_the_rerun_works(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "new.npy"
    disk = FullDisk(monkeypatch, match="new.npy")
    with pytest.raises(ZipARError, match="could not write .*new.npy: the disk is full .*; no file was created and no "
                                         "partial file was left"):
        outputs.write_npy(target, np.arange(100), overwrite=False)
    assert disk.hits == ["new.npy"] and snapshot(tmp_path) == {}
    monkeypatch.undo()
    outputs.write_npy(target, np.arange(3), overwrite=False)
    assert np.load(target).tolist() == [0, 1, 2] and sorted(snapshot(tmp_path)) == ["deep/new.npy"]


def test_a_temporary_file_that_cannot_be_removed_is_named(tmp_path, monkeypatch):
    FullDisk(monkeypatch, match="a.json")
    monkeypatch.setattr(outputs.os, "unlink", lambda p: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(ZipARError) as caught:
        outputs.write_json(tmp_path / "a.json", {"a": list(range(100))})
    left = [name for name in snapshot(tmp_path) if name.endswith(".part")]
    assert len(left) == 1 and f"a partial temporary file could not be removed: delete {tmp_path / left[0]}" in str(
        caught.value)


def test_errors_of_the_writer_itself_are_not_called_a_refused_write(tmp_path):
    """Pillow raises OSError without an errno for an image it cannot encode: a bug to see, not a disk."""
    def cannot_encode(f):
        f.write(b"x")
        raise OSError("cannot write mode RGBA as JPEG")

    with pytest.raises(OSError, match="cannot write mode") as caught:
        outputs.write_atomic(tmp_path / "a.jpg", cannot_encode)
    assert not isinstance(caught.value, ZipARError) and snapshot(tmp_path) == {}


@pytest.mark.parametrize("flag,name", [("--out", "a.png"), ("--tokens-out", "t.npy"), ("--stats-json", "s.json")])
def test_cli_overwrite_on_a_full_disk_is_one_line_and_keeps_the_old_file(files, tmp_path, capsys, monkeypatch, flag,
                                                                         name):
    """--overwrite and a disk that fills up in the middle of a file: one line naming it, the old file intact."""
    argv = generate(files, "--out", tmp_path / "a.png", "--tokens-out", tmp_path / "t.npy",
                    "--stats-json", tmp_path / "s.json")
    assert main(argv) == 0
    capsys.readouterr()
    old = (tmp_path / name).read_bytes()
    disk = FullDisk(monkeypatch, match=name)
    err = one_line(main(argv + ["--overwrite", "--seed", "9"]), capsys.readouterr().err)
    assert disk.hits == [name]
    assert err.startswith(f"error: could not write {tmp_path / name}: the disk is full (No space left on device); "
                          "the old file is intact (nothing was overwritten)"), err
    after = snapshot(tmp_path)
    assert after[name] == old and sorted(after) == ["a.png", "s.json", "t.npy"]  # no temporary left


def test_cli_decode_into_a_read_only_place_is_one_line(files, tmp_path, capsys, monkeypatch):
    assert main(generate(files, "--tokens-out", tmp_path / "t.npy")) == 0
    capsys.readouterr()
    disk = FullDisk(monkeypatch, match="d.png", code=errno.EROFS, at="replace")
    err = one_line(main(["decode", "--vq-model", str(files / "vq_ds16_c2i.pt"), "--tokens", str(tmp_path / "t.npy"),
                         "--out", str(tmp_path / "d.png")]), capsys.readouterr().err)
    assert disk.hits == ["d.png"]
    assert f"could not write {tmp_path / 'd.png'}: Read-only file system (EROFS); no file was created" in err
    assert sorted(snapshot(tmp_path)) == ["t.npy"]


def test_written_files_get_the_usual_permissions(tmp_path):
    path = outputs.write_text(tmp_path / "a.txt", "hi")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_api_save_images_checks_every_name_first(tmp_path):
    images = torch.rand(3, 3, 8, 8)
    (tmp_path / "x_2.png").write_bytes(b"mine")
    with pytest.raises(ZipARError, match="x_2.png already exists"):
        api.save_images(images, tmp_path / "x.png")
    assert snapshot(tmp_path) == {"x_2.png": b"mine"}  # x_0 and x_1 were not written either
    paths = api.save_images(images, [tmp_path / "p.png", tmp_path / "q.jpg", tmp_path / "r.webp"])
    assert [p.name for p in paths] == ["p.png", "q.jpg", "r.webp"]
    with pytest.raises(ZipARError, match="3 images but 2 file names"):
        api.save_images(images, [tmp_path / "m.png", tmp_path / "n.png"])


# ----------------------------------------------------------------------------- the demo and the training script

def test_demo_checks_its_output_before_loading_and_writes_atomically(tmp_path, monkeypatch):
    from zipar.demo import add_arguments, run_demo

    parse = add_arguments(argparse.ArgumentParser()).parse_args
    (tmp_path / "sheet.png").write_bytes(b"old sheet")
    monkeypatch.setattr(api, "load_vq", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(ZipARError, match="sheet.png already exists; choose another name for --out or pass --overwrite"):
        run_demo(parse(["--out", str(tmp_path / "sheet.png")]), log=lambda s: None)
    with pytest.raises(ZipARError, match="not an image format"):
        run_demo(parse(["--out", str(tmp_path / "sheet")]), log=lambda s: None)
    with pytest.raises(ZipARError, match="--cell must be between 8 and 1024"):
        run_demo(parse(["--out", str(tmp_path / "new.png"), "--cell", "0"]), log=lambda s: None)
    assert snapshot(tmp_path) == {"sheet.png": b"old sheet"}


def test_demo_sheet_on_a_full_disk_is_one_line_and_keeps_the_old_sheet(tmp_path, capsys, monkeypatch):
    (tmp_path / "sheet.png").write_bytes(b"old sheet")
    disk = FullDisk(monkeypatch, match="sheet.png")
    err = one_line(main(["demo", "--out", str(tmp_path / "sheet.png"), "--overwrite", "--classes", "3",
                         "--window", "8", "--cell", "16"]), capsys.readouterr().err)
    assert disk.hits == ["sheet.png"]
    assert f"error: could not write {tmp_path / 'sheet.png'}: the disk is full" in err and "old file is intact" in err
    assert snapshot(tmp_path) == {"sheet.png": b"old sheet"}


def test_training_script_checks_every_output_before_training(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "..", "tools")))
    import train_demo

    (tmp_path / "train_log.json").write_text("{}")
    before = snapshot(tmp_path)
    assert train_demo.main(["--out", str(tmp_path), "--data-limit", "8"]) == 2
    err = capsys.readouterr().err
    assert "train_log.json already exists" in err and "pass --overwrite" in err
    assert snapshot(tmp_path) == before
