"""Untrusted names and files: model names from node inputs, symlink loops in the models folder,
shard paths in weight indexes, parallel checkpoint loads, unsafe advice in load errors, broken
T5 folders. Every bad case must fail with a ZipARError that names the problem and the fix, and
leave the models folder as it was."""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nodes
from nodes import host
from zipar.io.checkpoint import load_error_detail, read_state_dict
from zipar.errors import ZipARError
from zipar.io import hf_folder

N = nodes.NODE_CLASS_MAPPINGS
MARKER = "zipar-pickle-ran"  # created if a refused pickle ever executed its payload


def run(name, *args):
    node = N[name]()
    return getattr(node, N[name].FUNCTION)(*args)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed), files with their size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            is_dir = name in dirnames  # a folder's own mtime moves when a test rewrites a file in it
            out[os.path.relpath(path, root)] = "folder" if is_dir else (st.st_size, st.st_mtime_ns)
    return out


def refused(call, *words: str) -> str:
    """Run ``call``, expect a ZipARError whose message holds every word (case-insensitive)."""
    with pytest.raises(ZipARError) as info:
        call()
    assert type(info.value) is ZipARError
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} missing from: {message}"
    return message


@pytest.fixture
def models_dir(tmp_path):
    """A models folder with placeholder files (nothing here is loaded), plus files outside it that
    bad names try to reach and targets of the legitimate symlinks inside it."""
    models = tmp_path / "models"
    zipar = models / "zipar"
    (zipar / "sub").mkdir(parents=True)
    (zipar / "c2i_L_384.pt").write_bytes(b"weights")
    (zipar / "sub" / "x.pt").write_bytes(b"weights")
    (models / "Janus-Pro" / "Janus-Pro-1B").mkdir(parents=True)
    (models / "Janus-Pro" / "Janus-Pro-1B" / "config.json").write_text("{}")
    (models / "text_encoders" / "flan-t5-xl").mkdir(parents=True)
    (models / "text_encoders" / "flan-t5-xl" / "config.json").write_text("{}")
    (models / "secret.pt").write_bytes(b"not yours")  # ../secret.pt from models/zipar
    (tmp_path / "secret.pt").write_bytes(b"not yours")
    (tmp_path / "secret-t5").mkdir()
    (tmp_path / "secret-t5" / "config.json").write_text("{}")
    elsewhere = tmp_path / "other-disk"
    (elsewhere / "folder").mkdir(parents=True)
    (elsewhere / "linked.pt").write_bytes(b"weights")
    (elsewhere / "folder" / "y.pt").write_bytes(b"weights")
    (zipar / "linked.pt").symlink_to(elsewhere / "linked.pt")
    (zipar / "linked-folder").symlink_to(elsewhere / "folder", target_is_directory=True)
    host.set_models_dir(models)
    host.forget_modules()
    yield models
    host.set_models_dir(None)
    host.forget_modules()


BAD_NAMES = {
    "": "is empty",
    "/": "is empty",
    "../secret.pt": "'..'",
    f"..{os.sep}secret.pt": "'..'",
    "sub/../../secret.pt": "'..'",
    "../../secret.pt": "'..'",
    "c2i_L_384.pt\0.txt": "NUL",
    None: "not text",
}


def absolute_names(models: Path) -> dict[str, str]:
    return {str(models.parent / "secret.pt"): "absolute", str(models.parent / "secret-t5"): "absolute",
            "/etc/passwd": "absolute"}


def test_model_names_from_node_inputs_stay_in_their_folder(models_dir, monkeypatch):
    before = snapshot(models_dir)
    bad = {**BAD_NAMES, **absolute_names(models_dir)}
    for name, problem in bad.items():
        for call in (lambda: host.model_path(name), lambda: run("ZipARLoadARModel", name, 0, "auto", "default"),
                     lambda: run("ZipARLoadVQ", name, "fp32", "default")):
            refused(call, problem, "pick a file from the list", "ComfyUI/models/zipar")
        for call in (lambda: host.text_encoder_path(name),
                     lambda: run("ZipARTextEncodeT5", "a fox", name, "auto", "default")):
            refused(call, problem, "pick a folder from the list", "google/flan-t5-xl", "models/text_encoders")
    # what the lists offer keeps working: plain and nested files with either separator, links to
    # files and folders elsewhere on disk, config folders, the shipped demo files
    zipar = models_dir / "zipar"
    assert host.model_path("c2i_L_384.pt") == str(zipar / "c2i_L_384.pt")
    assert host.model_path("sub/x.pt") == host.model_path(f"sub{os.sep}x.pt") == str(zipar / "sub" / "x.pt")
    assert host.model_path("linked.pt") == str(zipar / "linked.pt")
    assert host.model_path("linked-folder/y.pt") == str(zipar / "linked-folder" / "y.pt")
    assert host.model_path("Janus-Pro/Janus-Pro-1B") == str(models_dir / "Janus-Pro" / "Janus-Pro-1B")
    assert Path(host.model_path("zipar-demo/demo_vq.safetensors")).name == "demo_vq.safetensors"
    assert host.text_encoder_path("flan-t5-xl") == str(models_dir / "text_encoders" / "flan-t5-xl")
    refused(lambda: host.model_path("missing.pt"), "not found", "ComfyUI/models/zipar")
    # inside ComfyUI the name is checked before folder_paths sees it
    asked = []
    fp = types.ModuleType("folder_paths")
    fp.get_folder_paths = lambda folder: [str(models_dir / folder)]
    fp.get_filename_list = lambda folder: []

    def get_full_path(folder, name):
        asked.append(name)
        path = os.path.join(str(models_dir / folder), name)
        return path if os.path.isfile(path) else None

    fp.get_full_path = get_full_path
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    host.forget_modules()
    for name, problem in bad.items():
        refused(lambda: host.model_path(name), problem, "pick a file from the list")
    assert asked == []
    assert host.model_path(f"sub{os.sep}x.pt") == str(zipar / "sub" / "x.pt") and asked == ["sub/x.pt"]
    assert host.model_path("Janus-Pro/Janus-Pro-1B") == str(models_dir / "Janus-Pro" / "Janus-Pro-1B")
    assert snapshot(models_dir) == before


def test_symlink_loops_end_and_linked_files_and_folders_are_listed(models_dir):
    zipar, encoders = models_dir / "zipar", models_dir / "text_encoders"
    (zipar / "loop").symlink_to(zipar, target_is_directory=True)  # two loops: 2^depth paths without the fix
    (zipar / "sub" / "up").symlink_to(zipar, target_is_directory=True)
    (zipar / "Emu3-Gen-hf").mkdir()
    (zipar / "Emu3-Gen-hf" / "config.json").write_text("{}")
    (encoders / "loop").symlink_to(encoders, target_is_directory=True)
    (encoders / "google").mkdir()
    (encoders / "google" / "back").symlink_to(encoders, target_is_directory=True)
    (encoders / "google" / "flan-t5-xl").symlink_to(encoders / "flan-t5-xl", target_is_directory=True)
    elsewhere = models_dir.parent / "other-disk" / "MyModel"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("{}")
    (zipar / "linked-model").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(models_dir)
    result = {}
    worker = threading.Thread(target=lambda: result.update(models=host.list_models(), t5=host.list_text_encoders()),
                              daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "listing the models folder does not end"
    builtins = list(host.builtin_models())
    assert result["models"] == ["c2i_L_384.pt", "linked-folder/y.pt", "linked.pt", "sub/x.pt",
                                "Emu3-Gen-hf", "linked-model", "Janus-Pro/Janus-Pro-1B", *builtins]
    assert result["t5"] == ["flan-t5-xl"]  # google/flan-t5-xl is the same folder: listed once
    assert snapshot(models_dir) == before


def write_shard(path: Path, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = {f"layer{seed}.weight": torch.randn(3, 2, generator=g)}
    save_file(tensors, str(path))
    return tensors


def test_weight_index_shards_stay_in_their_folder(tmp_path):
    folder = tmp_path / "models" / "zipar" / "Some-Model"
    folder.mkdir(parents=True)
    first = write_shard(folder / "model-00001-of-00002.safetensors", 1)
    outside = tmp_path / "elsewhere" / "model-00002-of-00002.safetensors"
    outside.parent.mkdir()
    second = write_shard(outside, 2)
    (folder / "model-00002-of-00002.safetensors").symlink_to(outside)  # a linked shard inside the folder is fine
    write_shard(tmp_path / "models" / "secret.safetensors", 3)
    index = folder / "model.safetensors.index.json"

    def write_index(value: object, name: str = "model.safetensors.index.json") -> None:
        weight_map = {"layer1.weight": "model-00001-of-00002.safetensors", "layer3.weight": value}
        (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    index.write_text(json.dumps({"weight_map": {"layer1.weight": "model-00001-of-00002.safetensors",
                                                "layer2.weight": "./model-00002-of-00002.safetensors"}}))
    keys = hf_folder.keys_by_file(folder, "hint")
    assert hf_folder.read_tensors(keys, lambda k: True).keys() == {**first, **second}.keys()
    before = snapshot(tmp_path / "models")
    outside_values = ["../secret.safetensors", "../../models/secret.safetensors", "sub/../../secret.safetensors",
                      str(tmp_path / "models" / "secret.safetensors"), "/etc/passwd", "..\\secret.safetensors",
                      "C:\\secret.safetensors", "\\\\server\\share\\secret.safetensors"]
    unusable = ["", None, 7, "model\0.safetensors"]
    tried = 0
    for name in hf_folder.INDEX_FILES:
        index.unlink(missing_ok=True)
        (folder / "pytorch_model.bin.index.json").unlink(missing_ok=True)
        for value in outside_values + unusable:
            write_index(value, name)
            words = ("points outside the folder", str(value)) if value in outside_values else ("names no usable file",)
            for call in (lambda: hf_folder.weight_files(folder, "hint"),
                         lambda: hf_folder.keys_by_file(folder, "hint")):
                refused(call, "weight index", str(folder), "re-download", *words)
                tried += 1
    assert tried == 2 * 2 * (len(outside_values) + len(unusable))
    after = snapshot(tmp_path / "models")
    assert {k: v for k, v in after.items() if "index.json" not in k} == \
        {k: v for k, v in before.items() if "index.json" not in k}


def test_parallel_loads_of_training_checkpoints(tmp_path):
    """LlamaGen's train scripts save ``{"model": sd, "args": Namespace}``; before the fix one thread
    leaving torch's safe_globals block removed Namespace while another thread was unpickling."""
    g = torch.Generator().manual_seed(0)
    sd = {f"layers.{i}.weight": torch.randn(8, 8, generator=g) for i in range(16)}
    args = argparse.Namespace(gpt_model="GPT-B", lr=1e-4, global_batch_size=256)
    torch.save({"model": sd, "steps": 10, "args": args}, tmp_path / "c2i_B_256.pt")
    torch.save({"model": sd, "args": args}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # as in a fresh process: the first load registers Namespace
    threads, rounds = 8, 10
    barrier = threading.Barrier(threads)
    results: list[dict[str, torch.Tensor]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def load(index: int) -> None:
        barrier.wait()
        for i in range(rounds):
            try:
                if (index + i) % 3 == 2:
                    out = hf_folder._open_bin(tmp_path / "pytorch_model.bin")
                else:
                    out = read_state_dict(tmp_path / ("legacy.pt" if (index + i) % 3 else "c2i_B_256.pt"))
            except BaseException as exc:  # collected: an exception in a thread would be lost
                with lock:
                    errors.append(exc)
                continue
            with lock:
                results.append(out)

    try:
        workers = [threading.Thread(target=load, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    assert errors == []
    assert len(results) == threads * rounds
    for out in results:
        assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)


class Payload:
    """Pickles as a call to ``_touch``: running it would create the marker file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return _touch, (self.path,)


def _touch(path: str) -> None:
    Path(path).write_text("the pickle ran")


class TrainerState(collections.OrderedDict):
    """A class of the saving program's own, as foreign checkpoints carry."""


def test_load_errors_never_advise_weights_only_false(tmp_path):
    models = tmp_path / "models" / "zipar"
    bin_folder = models / "Foreign-Model"
    bin_folder.mkdir(parents=True)
    marker = tmp_path / MARKER
    sd = {"w": torch.zeros(2)}
    torch.save({"model": sd, "hook": Payload(str(marker))}, models / "payload.pt")
    torch.save({"model": TrainerState(sd)}, models / "subclass.pt")
    torch.save({"model": sd, "hook": Payload(str(marker))}, models / "legacy.pt", _use_new_zipfile_serialization=False)
    (models / "html.pt").write_text("<html>404 Not Found</html>")
    (models / "truncated.pt").write_bytes((models / "payload.pt").read_bytes()[:200])
    torch.save({"w": torch.zeros(2), "hook": Payload(str(marker))}, bin_folder / "pytorch_model.bin")
    (bin_folder / "config.json").write_text("{}")
    before = snapshot(tmp_path / "models")
    messages = []
    for name in ("payload.pt", "subclass.pt", "legacy.pt"):
        messages.append(refused(lambda: read_state_dict(models / name), "cannot read", name, "pickles Python objects",
                                "never runs code", "official", "re-download"))
    for name in ("html.pt", "truncated.pt"):
        messages.append(refused(lambda: read_state_dict(models / name), "cannot read", name, "as a torch checkpoint",
                                "re-download"))
    messages.append(refused(lambda: hf_folder.keys_by_file(bin_folder, "hint"), "pickles Python objects",
                            "pytorch_model.bin", "never runs code", "re-download"))
    messages.append(refused(lambda: hf_folder._open_bin(models / "html.pt"), "cannot read weight file", "re-download"))
    # torch's advice in all its forms, as the detail helper sees it
    advice = pickle_error = None
    try:
        torch.load(str(models / "subclass.pt"), weights_only=True)
    except Exception as exc:
        pickle_error = exc
        advice = load_error_detail(exc)
    assert pickle_error is not None and "weights_only" in str(pickle_error)  # torch still gives the advice ...
    messages.append(advice)
    messages.append(load_error_detail(RuntimeError("Weights only load failed. Re-running `torch.load` with "
                                                   "`weights_only` set to `False` will likely succeed.")))
    for message in messages:
        assert "weights_only" not in message and "safe_globals" not in message  # ... we never pass it on
        assert "trust" not in message.lower()
    assert "TrainerState" in messages[1]  # what was refused is still named
    assert not marker.exists()
    assert snapshot(tmp_path / "models") == before


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from helpers.node_fixtures import write_tiny_t5

    return write_tiny_t5(tmp_path_factory.mktemp("t5") / "flan-t5-xl")


T5_BREAKS = {
    "config-not-json": lambda f: (f / "config.json").write_text("{not json"),
    "config-not-object": lambda f: (f / "config.json").write_text("[1, 2]"),
    "config-of-llama": lambda f: (f / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 24})),
    "config-of-other-size": lambda f: (f / "config.json").write_text(json.dumps(  # no model_type: transformers decides
        {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 14})),
    "weights-missing": lambda f: (f / "model.safetensors").unlink(),
    "weights-damaged": lambda f: (f / "model.safetensors").write_bytes(b"<html>"),
}


def test_broken_t5_folders_say_to_download_flan_t5(tiny_t5, tmp_path, monkeypatch):
    import transformers

    from zipar.text_encoder import T5TextEncoder

    encoders = tmp_path / "models" / "text_encoders"
    for name, breaks in T5_BREAKS.items():
        shutil.copytree(tiny_t5, encoders / name)
        breaks(encoders / name)
    host.set_models_dir(tmp_path / "models")
    host.forget_modules()
    seen_kwargs = []
    for cls in (transformers.AutoTokenizer, transformers.T5EncoderModel):  # spy: nothing may come from the internet
        original = cls.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen_kwargs.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    before = snapshot(tmp_path / "models")
    try:
        for name in T5_BREAKS:
            folder = encoders / name
            with pytest.raises(ZipARError) as info:
                T5TextEncoder(folder)
            message = str(info.value)
            assert type(info.value) is ZipARError and str(folder) in message
            assert "download google/flan-t5-xl completely into" in message, message
            assert "weights_only" not in message and "trust" not in message.lower()
            if name != "config-not-object" and name != "config-of-llama":
                assert info.value.__cause__ is not None  # the original error stays attached
            refused(lambda: run("ZipARTextEncodeT5", "a red fox", name, "fp32", "cpu"), name, "google/flan-t5-xl")
        assert "llama" in str(pytest.raises(ZipARError, T5TextEncoder, encoders / "config-of-llama").value)
        encoder = T5TextEncoder(tiny_t5)  # the intact folder still loads
        assert encoder.encode(["a red fox"])[0].shape[1] == 120
    finally:
        host.set_models_dir(None)
        host.forget_modules()
    assert seen_kwargs and all(kw.get("local_files_only") is True for kw in seen_kwargs)
    assert snapshot(tmp_path / "models") == before
