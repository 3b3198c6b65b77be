"""Writing outputs atomically (reading is in :mod:`scamort.readers`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import mudata as md


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """A temporary path beside ``target``, renamed onto it when the block succeeds; on any
    error it is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    try:
        yield tmp
        # a temporary file is private (0600); the result gets the mode any new file of
        # the user's would (their umask), so colleagues can read what they could before
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(target: str | os.PathLike, write) -> None:
    """Call ``write(f)`` on a binary file at a temporary path, sync it, rename it in place."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(data, path: str | os.PathLike) -> None:
    """Write AnnData / MuData to a temporary file beside ``path``, then rename it."""
    with atomic_path(path) as tmp:
        if isinstance(data, md.MuData):
            data.write_h5mu(tmp)
        else:
            data.write_h5ad(tmp)
