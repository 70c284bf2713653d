"""Shared test set-up: the repository root (``zipar``, ``nodes``, ``bench``) and this folder (the
``helpers`` package of tiny models, fixtures and reference decoders) are importable from every
test module, whichever layer folder it sits in."""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for path in (TESTS.parent, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
