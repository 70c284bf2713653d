"""The zipar engine, imported the same way inside ComfyUI and in tests.

ComfyUI loads this pack as a package (``custom_nodes/<folder>/__init__.py`` under a module
name of its own, whatever the folder is called), so ``nodes`` is a subpackage here and the
engine is reached relatively, beside it, without touching ``sys.path`` and without any
clash with ComfyUI's own top-level ``nodes`` module. When ``nodes`` is itself the top-level
package (pytest, with the repository root on ``sys.path``), there is no parent package and
the engine is the top-level ``zipar`` package, the one the engine's own tests use.
"""
from __future__ import annotations

if "." in (__package__ or ""):
    from ..zipar import api
    from ..zipar.demo import demo_files
    from ..zipar.errors import ConditionMismatch, ZipARError, memory_guard
    from ..zipar.families.base import Condition
    from ..zipar.model_kind import model_kind
    from ..zipar.families.base import ASPECT_RATIOS
    from ..zipar.core.sampling import CFG_SCHEDULES, SamplingOptions
    from ..zipar.core.speculative import DEFAULT_DRAFT_LENGTH, MAX_DRAFT_LENGTH
    from ..zipar.core.static_step import COMPILE_MODES, free_caches as free_compiled_caches, release as release_compiled
else:  # nodes/ imported as a top-level package: tests, scripts
    from zipar import api
    from zipar.demo import demo_files
    from zipar.errors import ConditionMismatch, ZipARError, memory_guard
    from zipar.families.base import Condition
    from zipar.model_kind import model_kind
    from zipar.families.base import ASPECT_RATIOS
    from zipar.core.sampling import CFG_SCHEDULES, SamplingOptions
    from zipar.core.speculative import DEFAULT_DRAFT_LENGTH, MAX_DRAFT_LENGTH
    from zipar.core.static_step import COMPILE_MODES, free_caches as free_compiled_caches, release as release_compiled


def text_encoder_class():
    """T5TextEncoder, imported on first use (it pulls in transformers only when called)."""
    if "." in (__package__ or ""):
        from ..zipar.text_encoder import T5TextEncoder
    else:
        from zipar.text_encoder import T5TextEncoder
    return T5TextEncoder


__all__ = ["api", "demo_files", "ASPECT_RATIOS", "ZipARError", "ConditionMismatch", "Condition", "SamplingOptions",
           "text_encoder_class", "memory_guard", "model_kind"]
