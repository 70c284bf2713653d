"""TorchScript archives (torch.jit.save) are read for their tensors without running anything:
scripted and traced modules give back exactly their state dicts, and a data.pkl that names any
other global is refused before the global is called."""
import pickle
import zipfile

import pytest
import torch
from torch import nn

from zipar.errors import ZipARError
from zipar.io.torchscript import is_torchscript_archive, read_torchscript_objects, read_torchscript_tensors

# torch.jit.script / trace write the archives (the reference), and warn that they are deprecated
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning",
                                        "ignore:`torch.jit:DeprecationWarning")  # torch 2.13 says it this way


class Block(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = nn.Conv2d(cin, 3, 3, padding=1)
        self.norm = nn.GroupNorm(1, 3)
        self.register_buffer("steps", torch.arange(4, dtype=torch.int64))

    def forward(self, x):
        return self.norm(self.conv(x)) + self.steps.sum()


class Tiny(nn.Module):
    """Nested modules (a ModuleList, a Sequential), a bfloat16 parameter, an int buffer, a
    parameter that views another's storage, and a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(2), Block(3)])
        self.head = nn.Sequential(nn.Conv2d(3, 2, 1), nn.SiLU())
        self.scale = nn.Parameter(torch.randn(2, 5).to(torch.bfloat16))
        self.part = nn.Parameter(self.head[0].weight.data[:1])  # shares the head's storage
        self.register_buffer("hidden", torch.full((3,), 2.5), persistent=False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x) * self.scale.float().sum() + self.part.sum() + self.hidden.sum()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.mark.parametrize("how", ["script", "trace"])
def test_archive_reads_back_to_the_state_dict(tmp_path, tiny, how):
    path = tmp_path / "tiny.jit"
    module = torch.jit.script(tiny) if how == "script" else torch.jit.trace(tiny, torch.randn(1, 2, 4, 4))
    module.save(str(path))
    assert is_torchscript_archive(path)
    tensors = read_torchscript_tensors(path)
    expected = tiny.state_dict()
    # TorchScript saves non-persistent buffers as attributes too: they come back, beside the state dict
    assert set(tensors) == set(expected) | {"hidden"}
    assert torch.equal(tensors["hidden"], tiny.hidden)
    for name, value in expected.items():
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape, name
        assert torch.equal(tensors[name], value), name
    assert not any(t.requires_grad for t in tensors.values())
    root = read_torchscript_objects(path)
    assert root.qualified_name.startswith("__torch__")
    assert root.attributes["blocks"].attributes["0"].qualified_name.endswith("Block")


def test_other_files_are_not_archives(tmp_path, tiny):
    saved = tmp_path / "weights.pt"
    torch.save(tiny.state_dict(), saved)  # a zip too, but without code/
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_torchscript_archive(saved) and not is_torchscript_archive(text)
    assert not is_torchscript_archive(tmp_path / "missing.jit")
    with pytest.raises(ZipARError, match="not a TorchScript archive"):
        read_torchscript_tensors(saved)
    with pytest.raises(ZipARError, match="cannot read"):
        read_torchscript_tensors(text)


def _swap_data_pkl(source, target, payload: bytes):
    """``source`` with its data.pkl replaced by ``payload`` (everything else kept)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, payload if info.filename.endswith("/data.pkl") else src.read(info))
    return target


class _Reduce:
    """Pickles as a call of ``func(*args)`` (GLOBAL + REDUCE), as an attack would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("attack", ["os.system", "builtins.exec", "nested eval"])
def test_malicious_data_pkl_is_refused_without_running(tmp_path, tiny, attack):
    import builtins
    import os

    archive = tmp_path / "good.jit"
    torch.jit.script(tiny).save(str(archive))
    marker = tmp_path / "pwned"
    if attack == "os.system":
        payload = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
        named = "(os|posix|nt).system"
    elif attack == "builtins.exec":
        payload = pickle.dumps(_Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"), protocol=2)
        named = "(builtins|__builtin__).exec"
    else:  # hidden one level down, inside an ordinary-looking attribute dict
        payload = pickle.dumps({"weights": [1, _Reduce(builtins.eval, f"open({str(marker)!r}, 'w')")]}, protocol=2)
        named = "(builtins|__builtin__).eval"
    assert named.rsplit(".", 1)[1].encode() in payload
    bad = _swap_data_pkl(archive, tmp_path / "bad.jit", payload)
    assert is_torchscript_archive(bad)  # names alone cannot tell: the read must refuse
    with pytest.raises(ZipARError, match=f"names {named}.*never runs code"):
        read_torchscript_tensors(bad)
    assert not marker.exists()


def test_missing_tensor_data_is_a_clear_error(tmp_path, tiny):
    archive = tmp_path / "good.jit"
    torch.jit.script(tiny).save(str(archive))
    cut = tmp_path / "cut.jit"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                dst.writestr(info, src.read(info))
    with pytest.raises(ZipARError, match="lacks the tensor data .*re-download"):
        read_torchscript_tensors(cut)
