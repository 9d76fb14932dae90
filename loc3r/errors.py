"""The one error type users see: a single line naming the file (or input) and the problem.

The CLI catches `Loc3rError`, prints `loc3r: error: <message>` and exits with status 2; anything else
is a bug and keeps its traceback.
"""


class Loc3rError(Exception):
    """Bad input or a bad file: the message is one line that names the file and says what is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
