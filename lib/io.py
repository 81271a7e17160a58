"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import errno
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lib.errors import Refusal

# The process's umask, read once (os.umask can only be read by setting it). mkstemp creates files
# owner-only; the finished file gets what open() would have given it: 0o666 less the umask, so
# results in a shared folder stay readable by the group, as the user's umask says.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


class WriteError(Refusal):
    """A file that could not be written (a full disk, a read-only folder, a size limit); the message
    says which file, why, and that what was written before stays."""


_WRITE_HINTS = {
    errno.ENOSPC: "the disk holding it is full: free space there (df -h), or write to another disk",
    errno.EDQUOT: "your disk quota there is used up: free space, or write to another disk",
    errno.EFBIG: "a file size limit stops it (ulimit -f, or the file system's largest file)",
    errno.EROFS: "its file system is mounted read-only: write to another folder",
    errno.EACCES: "you may not write there: make the folder writable, or write to another one",
    errno.EPERM: "you may not write there: make the folder writable, or write to another one",
}


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    """The WriteError for an OSError met writing `path`."""
    hint = _WRITE_HINTS.get(e.errno, "")
    return WriteError(
        f"cannot write {path}: {e.strerror or e}{'; ' + hint if hint else ''}. "
        "What was written before is kept as it was."
    )


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind `e` (itself, or what it was raised from or during: torch.save reports a
    failed write as a RuntimeError raised while handling the file object's OSError), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path`.
    A failed write (a full disk, a read-only folder) raises WriteError and leaves `path` as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and (cause := os_error_in(e)) is not None:
            raise write_error(path, cause) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def deb_data_tar(path: str | os.PathLike) -> tarfile.TarFile:
    """The data.tar.* member of a Debian package (an ar archive) as an open tar file."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise Refusal(f"{path}: not a Debian package (no ar header)")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            data = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                try:
                    return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
                except tarfile.TarError as e:
                    raise Refusal(f"{path}: its data.tar cannot be read ({e})") from None
    raise Refusal(f"{path}: a Debian package without data.tar")
