"""Atomic file and directory writes: a crash or a bad input never leaves a half-written cache or checkpoint.

Everything is written to a temporary sibling first and moved into place with `os.replace`, which is atomic
on POSIX file systems when source and target share a directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from loc3r.errors import Loc3rError

# errors of writing that are the user's to fix (disk, quota, permissions): one line naming the target
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


_TEMPORARY = re.compile(r"\.(.+)\.\w+\.tmp")  # what atomic_path / atomic_dir name their temporaries


def shown_path(path: str | os.PathLike) -> Path:
    """The path as the user knows it: a temporary of atomic_path / atomic_dir (`.<name>.<random>.tmp`), at any depth,
    named as its target."""
    return Path(*[m.group(1) if (m := _TEMPORARY.fullmatch(part)) else part for part in Path(path).parts])


@contextlib.contextmanager
def _as_write_errors(path: Path) -> Iterator[None]:
    """OSErrors of WRITE_ERRNOS -> Loc3rError("<path>: cannot write (<reason>)")."""
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise Loc3rError(f"{shown_path(path)}: cannot write ({(e.strerror or str(e)).lower()})") from None


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: os has no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it is renamed to `path`, on error removed. The file
    gets the permissions a plain open() would give (0666 minus the umask), not mkstemp's private 0600."""
    path = Path(path)
    with _as_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
    tmp = Path(tmp)
    try:
        with _as_write_errors(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` (old content removed). The
    directory gets the permissions mkdir would give (0777 minus the umask), not mkdtemp's private 0700."""
    path = Path(path)
    with _as_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~current_umask())
    try:
        with _as_write_errors(path):
            yield tmp
        mode = 0o666 & ~current_umask()  # what a plain write gives: writers such as safetensors' make files 0600
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                f.chmod(mode)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(out_dir: str | os.PathLike, overwrite: bool, previous: Callable[[Path], bool],
                      what: str = "a previous conversion") -> None:
    """Refuse to replace out_dir unless it is absent, empty or `previous(out_dir)` (`what` the same command wrote
    before), or overwrite is set: anything else may be the user's. With overwrite, a file at that path is removed."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        if not out_dir.is_dir():
            raise Loc3rError(f"{out_dir}: exists and is not a directory (pass --overwrite to replace it)")
        if any(out_dir.iterdir()) and not previous(out_dir):
            raise Loc3rError(f"{out_dir}: not empty and not {what}: refusing to replace it "
                             "(pass --overwrite to replace it)")
    if overwrite and out_dir.is_file():
        out_dir.unlink()


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write `obj` as JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed .npz atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
