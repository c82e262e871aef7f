"""Atomic file replacement: a file the package writes is either the old one or the new one, whole.

Every writer writes to a temporary file in the target's own folder (same file system, so the
final :func:`os.replace` is atomic on POSIX and Windows) and replaces the target only once the
new content is complete and flushed. A crash, a full disk or an exception mid-write leaves the
previous file untouched and removes the temporary file.

Example::

    from lightning_complexity.atomic import atomic_path, atomic_write

    with atomic_write("history.csv") as handle:          # a text handle on the temporary file
        handle.write("step,epoch,metric,site,value\\n")
    with atomic_path("history.parquet") as temporary:    # for writers that want a path
        frame.to_parquet(temporary)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

_TEMPORARY_SUFFIX = ".tmp"


def _temporary_beside(path: Path) -> Path:
    # A hidden name in the same folder: os.replace must not cross file systems.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on a clean exit it replaces ``path``, on an error it is removed.

    The parent folder is created if needed. The new file gets the permissions a plain ``open``
    would give it (``0o666`` less the umask), not the ``0o600`` of :mod:`tempfile`.

    Example::

        with atomic_path("figure.png") as temporary:
            figure.savefig(temporary, format="png")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    # Created empty here (exclusively, with the umask applied) so that its mode is a normal file's.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        _flush_to_disk(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """An open handle on a temporary file that replaces ``path`` when the block ends without error.

    ``mode`` is ``"w"`` (text; ``open_args`` such as ``newline=""`` or ``encoding=`` go to
    :func:`open`) or ``"wb"``.

    Example::

        with atomic_write("notes.txt", encoding="utf-8") as handle:
            handle.write("done\\n")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not accepted: expected 'w' or 'wb'")
    with atomic_path(path) as temporary, open(temporary, mode, **open_args) as handle:
        yield handle


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8", errors: str = "strict") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``.

    Example::

        atomic_write_text("report.html", "<!DOCTYPE html>...")
    """
    with atomic_write(path, "w", encoding=encoding, errors=errors, newline="") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``.

    Example::

        atomic_write_bytes("figure.png", png_bytes)
    """
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def _flush_to_disk(path: Path) -> None:
    # fsync before the rename: after a power cut the target is the old or the new file, never empty.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
