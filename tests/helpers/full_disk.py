"""A disk that fills up (or refuses writes otherwise), injected under ``zipar.io.outputs``.

Every file the pack writes goes through ``outputs.write_atomic``: a temporary file from
``tempfile.mkstemp``, opened with ``os.fdopen``, flushed, ``os.fsync``-ed and ``os.replace``-d
over the target. ``FullDisk`` patches those calls so that the write of a chosen target fails the
way the system fails it: ``OSError(code, os.strerror(code))`` after some bytes have reached the
file (``at="write"``), at the sync (``"fsync"``) or at the rename (``"replace"``). ``hits`` lists
the targets it failed (once each), so that a test can check the fault really happened.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from zipar.io import outputs


class _FillingFile:
    """A real file object that accepts ``room`` bytes, writes part of the next chunk and then fails."""

    def __init__(self, real, disk: "FullDisk", target: str):
        self._real, self._disk, self._target = real, disk, target
        self._room = disk.after

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) <= self._room:
            self._room -= len(data)
            return self._real.write(data)
        self._real.write(data[:self._room])  # a partial file on disk, as a real full disk leaves it
        self._real.flush()
        self._room = 0
        raise self._disk.fail(self._target)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()
        return False


class FullDisk:
    """Fail the writes of targets whose file name contains ``match`` (after the first ``skip`` of
    them) with errno ``code``, at ``at``: ``FullDisk(monkeypatch, match="a.png")``; the patches go
    with the test's ``monkeypatch``."""

    def __init__(self, monkeypatch, match: str = "", code: int = errno.ENOSPC, at: str = "write", after: int = 16,
                 skip: int = 0):
        assert at in ("write", "fsync", "replace"), at
        self.match, self.code, self.at, self.after, self.skip = match, code, at, after, skip
        self.hits: list[str] = []
        self._seen = 0
        self._targets: dict[int, str] = {}  # open temporary fd -> its target's name
        real_mkstemp, real_fdopen, real_fsync, real_replace = (outputs.tempfile.mkstemp, os.fdopen, os.fsync,
                                                               os.replace)

        def mkstemp(*args, **kwargs):
            fd, tmp = real_mkstemp(*args, **kwargs)
            prefix = kwargs.get("prefix", "")
            if prefix.startswith(".") and prefix.endswith(".") and self._chosen(prefix[1:-1]):
                self._targets[fd] = prefix[1:-1]
            return fd, tmp

        def fdopen(fd, *args, **kwargs):
            real = real_fdopen(fd, *args, **kwargs)
            target = self._targets.pop(fd, None)
            if target is None:
                return real
            if self.at == "write":
                return _FillingFile(real, self, target)
            if self.at == "fsync":
                self._sync_fails[fd] = target
            else:
                self._replace_fails.add(target)
            return real

        def fsync(fd):
            if fd in self._sync_fails:
                raise self.fail(self._sync_fails.pop(fd))
            return real_fsync(fd)

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name in self._replace_fails:
                self._replace_fails.discard(Path(dst).name)
                raise self.fail(Path(dst).name)
            return real_replace(src, dst, *args, **kwargs)

        self._sync_fails: dict[int, str] = {}
        self._replace_fails: set[str] = set()
        monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(outputs.os, "fdopen", fdopen)
        monkeypatch.setattr(outputs.os, "fsync", fsync)
        monkeypatch.setattr(outputs.os, "replace", replace)

    def _chosen(self, name: str) -> bool:
        if self.match not in name:
            return False
        self._seen += 1
        return self._seen > self.skip

    def fail(self, target: str) -> OSError:
        if target not in self.hits:  # a writer may try again (zipfile does on close): one hit per file
            self.hits.append(target)
        return OSError(self.code, os.strerror(self.code))
