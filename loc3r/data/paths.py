"""Names read from data files (scene ids, video paths), checked to stay inside the data root.

A data file is input like any other: a scene id of `../../elsewhere` or `/home/user/x` would otherwise be read as a
scan and have caches and plots written beside it. Scene ids are one path segment of letters, digits, '_' and '-'
(ScanNet's look like scene0000_00; ScanNet++ and ARKitScenes ids are hex strings and numbers); a video path is
relative, without '..', each segment a plain file name. Links inside the data root are followed as they are (a
`scans/` folder linked elsewhere is the user's choice).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from loc3r.errors import Loc3rError

SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def scene_id(value: str, where: str) -> str:
    """`value` if it names a scene folder (one segment, no '..', not absolute); else a one-line error at `where`
    (the file and entry it was read from)."""
    if not SCENE_ID.fullmatch(value):
        raise Loc3rError(f"{where}: scene id {value!r} is not a scene name (letters, digits, '_' and '-', as "
                         "scene0000_00): names from data files must stay inside the data root")
    return value


def relative_file(value: str, where: str) -> str:
    """`value` if it is a relative path inside the root it is read against (no absolute path, no '..', plain
    segments); else a one-line error at `where`."""
    parts = PurePosixPath(value).parts
    if not parts or not all(FILE_NAME.fullmatch(p) for p in parts) or ".." in parts:
        raise Loc3rError(f"{where}: path {value!r} is not a relative path inside the data root (plain names "
                         "separated by '/', no '..')")
    return value


def file_part(text: str) -> str:
    """Any text (a question id of a data file) as part of a file name: characters other than letters, digits, '_',
    '-' and '.' become '_', and it never starts with '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)).lstrip(".") or "_"


def inside(root: Path, relative: str, where: str) -> Path:
    """root / relative, `relative` checked by relative_file."""
    return Path(root) / relative_file(relative, where)
