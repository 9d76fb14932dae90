"""The one error type users see: a single line naming the file (or input) and the problem.

The CLI catches `Loc3rError`, prints `loc3r: error: <message>` and exits with status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


class Loc3rError(Exception):
    """Bad input or a bad file: the message is one line that names the file and says what is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@contextlib.contextmanager
def naming(where) -> Iterator[None]:
    """Prefix `where` (a file or directory) to a Loc3rError raised inside, for errors of functions that only see
    arrays: `with naming(scene.dir / "pose"): bev_frame_of_video(c2w)`."""
    try:
        yield
    except Loc3rError as e:
        raise Loc3rError(f"{where}: {e}") from None
