"""Telling language models from VQs for the loaders' lists, without loading weights."""
from __future__ import annotations

import json
import os
import struct

import torch

from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar.model_kind import AR, BOTH, VQ, model_kind


def test_files_by_their_key_names(tmp_path):
    save_official_gpt(make_tiny_gpt("c2i"), tmp_path / "c2i.pt")  # {"model": sd, "args": Namespace}
    save_official_gpt(make_tiny_gpt("t2i"), tmp_path / "t2i.safetensors")
    save_official_vq(make_tiny_vq(), tmp_path / "vq.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "broken.safetensors").write_bytes(b"\x05")
    assert model_kind(tmp_path / "c2i.pt") == {AR} and model_kind(tmp_path / "t2i.safetensors") == {AR}
    assert model_kind(tmp_path / "vq.pt") == {VQ}
    for unknown in ("other.pt", "legacy.pt", "broken.safetensors", "missing.pt"):  # both loaders may say why
        assert model_kind(tmp_path / unknown) == BOTH


def test_a_safetensors_header_is_enough(tmp_path):
    """Only the header is read: a file whose tensor data is missing is still told apart."""
    header = json.dumps({k: {"dtype": "F32", "shape": [4096, 4096], "data_offsets": [0, 4096 * 4096 * 4]}
                         for k in ("tok_embeddings.weight", "layers.0.attention.wqkv.weight")}).encode()
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert model_kind(tmp_path / "big.safetensors") == {AR}


def test_answers_follow_the_file(tmp_path):
    path = tmp_path / "model.pt"
    save_official_gpt(make_tiny_gpt("c2i"), path)
    assert model_kind(path) == {AR}
    save_official_vq(make_tiny_vq(), path)  # replaced under the same name
    stamp = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))
    assert model_kind(path) == {VQ}
