"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
