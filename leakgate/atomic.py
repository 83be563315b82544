"""Write a file so that readers see the old content or the new, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644  # reports and baselines are CI artifacts: readable like any other file
EXECUTABLE_MODE = 0o755  # the binaries leakgate builds into its cache


def write_atomic(path: Path, content: str | bytes) -> None:
    """Replace `path` with `content` (text is written as UTF-8) atomically and durably.

    The text goes to a temporary file in the same directory (so the rename cannot cross file
    systems), which is fsynced, renamed over `path` with os.replace, and then the directory is
    fsynced so the rename itself survives a power cut. On any failure, including a signal, the
    temporary file is removed and the previous `path` is left untouched.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    _replace(Path(path), FILE_MODE, lambda f: f.write(data))


def install_file(source: Path, path: Path, mode: int = EXECUTABLE_MODE) -> None:
    """Replace `path` with a copy of the file `source`, with `mode`, as write_atomic does.

    For a file too large to hold in memory, such as a binary go build wrote into a temporary
    directory (perhaps on another file system than `path`): it is copied in chunks into a
    temporary file beside `path`, fsynced and renamed into place; `source` is left as it is.
    """
    with open(source, "rb") as src:
        _replace(Path(path), mode, lambda f: shutil.copyfileobj(src, f))


def _replace(path: Path, mode: int, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dir_fd = os.open(directory, flags)
    except OSError:
        return  # e.g. a platform without directory handles: the rename is done regardless
    try:
        os.fsync(dir_fd)
    except OSError as e:
        # Some file systems cannot fsync a directory; the new content is in place either way.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(dir_fd)
