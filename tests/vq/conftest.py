"""The VQ tests run on tiny tensors: with intra-op threads on a busy 2-core box, first calls
spend seconds spinning (17-30 s for the Emu3 module instead of ~7 s), so each module here runs
single-threaded, restored afterwards."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
