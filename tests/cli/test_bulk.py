"""Bulk sampling (``python -m zipar sample``): the same bytes at any world size and batch, resumable
after a killed process, refusing a folder of other settings, and the FID evaluators' .npz layout."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from helpers.full_disk import FullDisk
from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar.bulk import shard_ranges
from zipar.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk-models")
    save_official_gpt(make_tiny_gpt("c2i", seed=4), root / "c2i_tiny.pt")
    save_official_vq(make_tiny_vq(seed=5), root / "vq_tiny.pt")
    return root


def args(files, out, batch=2, window=2, extra=()):
    return ["sample", "--ar-model", str(files / "c2i_tiny.pt"), "--vq-model", str(files / "vq_tiny.pt"),
            "--classes", "1,4,7", "--per-class", "3", "--image-size", "64", "--window", str(window), "--cfg", "3",
            "--top-k", "20", "--seed", "11", "--shard-size", "4", "--batch", str(batch), "--device", "cpu",
            "--out", str(out), "--quiet", *extra]


def written(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("shard_*/*.png"))}


def _rank(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    assert main(argv) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_every_image_once():
    ranges = shard_ranges(10, 4)
    assert [list(r) for r in ranges] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_one_process_two_processes_and_any_batch_write_the_same_bytes(files, tmp_path):
    # one thread per process in both runs, as torchrun sets it: on the CPU, a reduction's last bits
    # depend on how many threads share it (one GPU per process has no such knob)
    mp.start_processes(_rank, args=(1, free_port(), args(files, tmp_path / "one", batch=3)), nprocs=1,
                       start_method="spawn")
    one = written(tmp_path / "one")
    assert len(one) == 9
    mp.start_processes(_rank, args=(2, free_port(), args(files, tmp_path / "two", batch=2)), nprocs=2,
                       start_method="spawn")  # gloo, as torchrun would start it on the CPU
    assert written(tmp_path / "two") == one
    a = np.load(tmp_path / "one" / "samples.npz")
    b = np.load(tmp_path / "two" / "samples.npz")
    assert list(a.keys()) == ["arr_0"] and a["arr_0"].shape == (9, 64, 64, 3) and a["arr_0"].dtype == np.uint8
    assert np.array_equal(a["arr_0"], b["arr_0"])
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "shard_00001" / "00000005.png")), a["arr_0"][5])
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["images"] == 9 and [s["images"] for s in manifest["shards"]] == [4, 4, 1]
    assert all(s["passes"] > 0 and s["seconds"] >= 0 for s in manifest["shards"])
    assert manifest["settings"]["conditions"] == [1, 1, 1, 4, 4, 4, 7, 7, 7] and "torch" in manifest["versions"]


def test_a_killed_process_loses_only_its_unfinished_shard(files, tmp_path):
    assert main(args(files, tmp_path / "whole")) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "ZIPAR_TEST_KILL_AT": "5", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "zipar", *args(files, out)], env=env, cwd=REPO, capture_output=True)
    assert done.returncode == -9  # SIGKILL right after image 5 (shard 1, half written)
    assert (out / "shard_00000.done.json").exists() and not (out / "shard_00001.done.json").exists()
    assert not (out / "samples.npz").exists()
    assert main(args(files, out)) == 0  # the same command again: shard 0 kept, the rest redone
    assert written(out) == written(tmp_path / "whole")
    assert not list(out.rglob("*.part"))
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], np.load(tmp_path / "whole" / "samples.npz")["arr_0"])


def test_other_settings_in_the_same_folder_are_refused(files, tmp_path, capsys):
    out = tmp_path / "job"
    assert main(args(files, out)) == 0
    before = written(out)
    assert main(args(files, out, window=3)) == 2
    assert "holds samples of other settings (window differ)" in capsys.readouterr().err
    assert written(out) == before
    assert main(args(files, out, batch=1)) == 0  # the batch is not a setting: nothing to redo
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    flags = [a for a in args(files, tmp_path / "other") if a not in ("--classes", "1,4,7")]
    assert main(flags + ["--prompts", str(prompts)]) == 2
    assert "class-to-image model: give --classes, not --prompts" in capsys.readouterr().err


SMALL = ("--classes", "1,4", "--per-class", "1", "--shard-size", "1")  # two images, one per shard


@pytest.fixture(scope="module")
def small_job(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("bulk-small") / "whole"
    assert main(args(files, out, extra=SMALL)) == 0
    return out


@pytest.mark.parametrize("target,skip", [("shard_00001/00000001.png", 0), ("shard_00001.npz", 0),
                                         ("shard_00001.done.json", 0), ("samples.npz", 0), ("manifest.json", 1)])
def test_a_full_disk_stops_the_job_with_one_line_in_a_resumable_state(files, small_job, tmp_path, capsys, monkeypatch,
                                                                      target, skip):
    out = tmp_path / "job"
    name = Path(target).name
    disk = FullDisk(monkeypatch, match=name, skip=skip)  # manifest.json: its rewrite at the end, not its first write
    code = main(args(files, out, extra=SMALL))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert disk.hits == [name]
    assert lines[0].startswith(f"error: could not write {out / target}: the disk is full (No space left on device); ")
    assert lines[0].endswith(f"Shards already finished in {out} are kept: the same command resumes the job and redoes "
                             "only the rest.")
    assert ("the old file is intact" in err) == (name == "manifest.json")
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]  # no partial file anywhere
    done = sorted(p.name for p in out.glob("*.done.json"))
    assert done == (["shard_00000.done.json"] if "shard_00001" in target else
                    ["shard_00000.done.json", "shard_00001.done.json"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert "finished" not in manifest and manifest["settings_key"]  # the old manifest, whole
    assert (out / "samples.npz").exists() == (name == "manifest.json")
    monkeypatch.undo()
    assert main(args(files, out, extra=SMALL)) == 0  # the same command resumes and finishes
    assert written(out) == written(small_job) and len(written(out)) == 2
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], np.load(small_job / "samples.npz")["arr_0"])
    assert json.loads((out / "manifest.json").read_text())["images"] == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
