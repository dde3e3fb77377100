"""Atomic file writes and hashing.

Every file vlmr writes goes through `atomic_write_*` or `atomic_dir`: a crash
leaves either the old file or the new one, never a truncated file that a later
stage would trust (`atomic_dir` says what a crash between its two renames leaves).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlmr.core.errors import VlmrError

# mkstemp creates files readable by their owner alone; written files get the usual mode (0666 less the umask)
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, so equal content gives equal bytes and equal hashes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, canonical_json(obj))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise VlmrError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VlmrError(f"{what} {path} is not valid JSON ({e}); delete it and rerun the stage that writes it") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Build a directory under a temporary name and swap it in on success.

    Yields the temporary directory. If the body raises, the old directory (if any) is untouched and the
    partial one is removed. POSIX cannot swap two directories in one rename, so replacing an existing one
    takes two: old -> `.NAME.old`, then new -> NAME. A crash between them leaves no NAME, never a partial
    one (readers then say it is missing), and the old version at `.NAME.old`; the next atomic_dir on the
    same path puts that back before it starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():  # a crash between the two renames of an earlier call
        os.replace(old, path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
