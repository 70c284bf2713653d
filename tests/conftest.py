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


# ----------------------------------------------------------------------------- long tests, behind a flag

def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (CI runs them as a second step; docs/testing.md)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (seconds to minutes of building); runs only with --run-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
