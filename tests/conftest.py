"""Shared test set-up: the repository root (``zipar``, ``nodes``, ``bench``) and this folder (the
``helpers`` package of tiny models, fixtures and reference decoders) are importable from every
test module, whichever layer folder it sits in."""
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for path in (TESTS.parent, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def four_families(tmp_path_factory):
    """One tiny model of each family, saved as its release saves it: {name: (model, condition, grid)}.
    The chat families are written with transformers' classes (skipped without it). Tests that
    change a model's state (compiled steps) release it when done."""
    from helpers.four_families import FAMILIES, load_tiny

    root = tmp_path_factory.mktemp("four")
    out = {}
    for name in FAMILIES:
        if name != "llamagen":
            pytest.importorskip("transformers")
        out[name] = load_tiny(name, root / name)
    return out
