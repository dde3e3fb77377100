"""Atomic file writes, writability checks and hashing.

Every file vlmr writes goes through `atomic_write_*` or `atomic_dir`: a crash
leaves either the old file or the new one, never a truncated file that a later
stage would trust (`atomic_dir` says what a crash between its two renames leaves).

Files get 0666 and folders 0777 less the process umask (0644 / 0755 under the usual 022), as
other tools write them. A write that fails (read-only folder, full disk) removes its temporary
file and raises `WriteError`, a VlmrError naming the path; stages call `check_writable` on
their output folders first, so they stop before their work rather than after it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlmr.core.errors import VlmrError

# mkstemp/mkdtemp create files and folders for their owner alone (0600/0700); vlmr's get the usual modes
_UMASK = os.umask(0)
os.umask(_UMASK)


def current_umask() -> int:
    """The process umask, read without changing it (setting it to read it would race with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return _UMASK  # no /proc (macOS): the umask at import


def set_usual_mode(path: str | os.PathLike) -> None:
    """Give a file 0666 and a folder 0777 less the umask: libraries such as safetensors create files 0600."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


class WriteError(VlmrError, OSError):
    """A file or folder could not be written; still an OSError, so `except OSError` callers keep working."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] strerror: filename"
        return str(self.args[0])


def write_error(path: str | os.PathLike, err: OSError, what: str = "") -> WriteError:
    """The one-line error for an OSError while writing `path` (what: "calibration file", ...)."""
    reason = err.strerror or str(err)
    hint = {errno.ENOSPC: "free some space", errno.EROFS: "choose a folder on a writable file system",
            errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
            errno.EDQUOT: "free some space (disk quota)"}.get(err.errno, "")
    text = f"cannot write {what + ' ' if what else ''}{path}: {reason}" + (f"; {hint}" if hint else "")
    out = WriteError(text)
    out.errno, out.strerror, out.filename = err.errno, reason, str(path)
    return out


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` and write and remove a probe file in it; a WriteError naming it if that fails.

    Stages call this on every output folder before their work starts, so a read-only or missing
    destination fails in a second, not after the scoring or training it would have saved.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".vlmr-write-probe.")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
    except OSError as e:
        raise write_error(folder, e, what) from None
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, VlmrError):
            raise write_error(path, e) from None
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

    The folder and everything in it get the usual modes (0777 / 0666 less the umask), whatever mode
    mkdtemp (0700) or the libraries writing into it (safetensors: 0600) chose. An OSError while
    filling or swapping it in (read-only, disk full) becomes a WriteError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.with_name(f".{path.name}.old")
        if old.is_dir() and not path.exists():  # a crash between the two renames of an earlier call
            os.replace(old, path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        for p in (tmp, *tmp.rglob("*")):  # what the body's writers chose (mkdtemp 0700, safetensors 0600)
            set_usual_mode(p)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        os_err = as_os_error(e)
        if os_err is not None and _inside(os_err.filename, tmp, path):
            raise write_error(path, os_err) from None
        raise


def as_os_error(e: BaseException) -> OSError | None:
    """The OSError behind an exception, or None: an OSError itself, or a library's I/O error that only
    says "os error N" in its text (safetensors reports a full disk that way). VlmrErrors are left alone."""
    if isinstance(e, VlmrError):
        return None
    if isinstance(e, OSError):
        return e
    found = re.search(r"os error (\d+)", str(e))
    return OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else None


def _inside(filename, *folders: Path) -> bool:
    """Whether an OSError is about the folder being written (or has no file name): reading an input is not."""
    if filename is None:
        return True
    return any(Path(os.fsdecode(filename)) == f or f in Path(os.fsdecode(filename)).parents for f in folders)
