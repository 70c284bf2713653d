"""The one exception type the engine raises for problems a user can fix.

ComfyUI shows an exception's message in its error dialog and the CLI prints it without a
traceback, so every message names the problem and the fix in plain words.
"""


class ZipARError(ValueError):
    """Bad input: a missing or wrong file, an out-of-range setting, mismatched models."""
