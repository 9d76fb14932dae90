"""Running one command module (a module with `add_arguments(parser)` and `run(args) -> int | None`) on an argument
list: what `loc3r <command>` does, and what `python -m loc3r.train` (torchrun) and `loc3r demo` use directly.
A Loc3rError becomes one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from types import ModuleType

from loc3r.errors import Loc3rError
from loc3r.io import WRITE_ERRNOS, shown_path


def run_command(module: ModuleType, name: str, argv: list[str], description: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"loc3r {name}", description=description)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except Loc3rError as e:
        print(f"loc3r: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written (read-only, full, denied): the user's to fix
        if e.errno not in WRITE_ERRNOS:
            raise
        where = shown_path(e.filename) if e.filename else "?"
        print(f"loc3r: error: {where}: cannot write ({(e.strerror or str(e)).lower()})", file=sys.stderr)
        return 2


def field_comments(cls) -> dict[str, str]:
    """The comment of every field of a dataclass, from its source (and its dataclass bases', a subclass's own comment
    first): `name: type = default  # comment`, or for a field without one, the comment lines just above it."""
    comments = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        above = []
        for line in inspect.getsource(klass).splitlines():
            if re.match(r"\s+#", line):
                above.append(line.strip().lstrip("#").strip())
                continue
            m = re.match(r"\s+(\w+): [^#]+?(?:#\s*(.+))?$", line)
            if m and (m.group(2) or above):
                comments[m.group(1)] = (m.group(2) or " ".join(above)).strip()
            above = []
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in comments.items() if k in names}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag a field of dataclass `cls`: `--batch-size` for batch_size, typed from its annotation, its comment as
    help with the default, required when it has no default, choices from `cls.CHOICES`; a bool field is a switch (an
    optional one also --no-x), a list field takes several values (and repeats), the fields named in
    `cls.POSITIONAL` are positional arguments. `cls.GROUPS` ({title: field names}) groups the flags in --help;
    `cls.help_defaults()` ({field: text}) says where a field left None takes its value from."""
    comments, hints = field_comments(cls), typing.get_type_hints(cls)
    choices, positional = getattr(cls, "CHOICES", {}), getattr(cls, "POSITIONAL", ())
    explained = cls.help_defaults() if hasattr(cls, "help_defaults") else {}
    groups = {}
    for title, names in getattr(cls, "GROUPS", {}).items():
        group = parser.add_argument_group(title)
        groups |= {name: group for name in names}
    order = {name: i for i, name in enumerate(groups)}  # flags in the groups' order, the others after them
    for f in sorted(dataclasses.fields(cls), key=lambda f: order.get(f.name, len(order))):
        kind, optional = hints[f.name], False
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # X | None
            kind, optional = next(a for a in typing.get_args(kind) if a is not type(None)), True
        flag, help_text = "--" + f.name.replace("_", "-"), comments.get(f.name, "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name in explained:
            help_text += f" (default: {explained[f.name]})"
        elif not required and f.default is not None and f.default is not False:
            help_text += f" (default: {f.default})"
        target = groups.get(f.name, parser)
        if kind is bool and optional:  # None: the recipe's (or the field's) value; --no-x turns a recipe's off
            target.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is bool:
            target.add_argument(flag, action="store_true", default=f.default, help=help_text)
        elif f.name in positional:
            target.add_argument(f.name, type=Path if kind is Path else kind, help=help_text)
        elif typing.get_origin(kind) is list:  # several values, the flag repeatable
            target.add_argument(flag, action="extend", nargs="+", type=typing.get_args(kind)[0], required=required,
                                help=help_text)
        else:
            target.add_argument(flag, type=Path if kind is Path else kind, required=required,
                                default=None if required else f.default, choices=choices.get(f.name),
                                help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace):
    """The dataclass `cls` of parsed flags (add_dataclass_arguments)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
