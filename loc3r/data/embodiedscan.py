"""EmbodiedScan's info files, read for the one thing loc3r takes from them: a ScanNet scan's axis alignment.

Where: `<root>/embodiedscan/` or `<root>/`, named `embodiedscan_infos_*.json` or `embodiedscan_infos_*.pkl`
(EmbodiedScan's `embodiedscan_infos_{train,val,test}.pkl`, LLaVA-3D's `embodiedscan_infos_full.json`); a `.pkl`
with a `.json` of the same name beside it is not read. Shapes read (learnt from their readers):

- EmbodiedScan's (OpenRobotLab/EmbodiedScan `embodiedscan/datasets/embodiedscan_dataset.py`, `load_data_list` and
  `_get_axis_align_matrix`; Video-3D-LLM's `llava/video_utils.py` reads the same): `{"metainfo": ..., "data_list":
  [{"sample_idx": "scannet/<scene_id>", "axis_align_matrix": 4x4, "images": [{"img_path", "depth_path",
  "cam2global"}], "cam2img", "depth_cam2img", ...}]}`; an entry without `axis_align_matrix` is the identity, as
  EmbodiedScan reads it. The same in JSON (lists for arrays) is read too.
- LLaVA-3D's (ZCMax/LLaVA-3D `docs/fintune_custom_data.md`, `llava/model/multimodal_encoder/video_processor.py`):
  `{"scannet/<scene_id>": {"axis_align_matrix": 4x4, "intrinsic", "depth_intrinsic", "<frame path>": {"pose",
  "depth"}}}`.

Entries of other data sets (3rscan/, matterport3d/, arkitscenes/) are skipped. A pickle can run code when it is
loaded, so `.pkl` files go through an unpickler that builds numpy arrays and plain Python data only and refuses
anything else with a one-line error (docs/data.md shows how to turn a trusted pickle into JSON).
"""

from __future__ import annotations

import collections
import json
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from loc3r.errors import Loc3rError

INFO_DIRS = ("embodiedscan", ".")  # where under the data root info files are looked for
INFO_PATTERN = "embodiedscan_infos_*"


def info_files(root: str | Path) -> list[Path]:
    """The info files under a data root, JSON first, a pickle only where no JSON of its name is beside it."""
    found = []
    for folder in (Path(root) / d for d in INFO_DIRS):
        found += sorted(folder.glob(f"{INFO_PATTERN}.json"))
        found += sorted(p for p in folder.glob(f"{INFO_PATTERN}.pkl") if not p.with_suffix(".json").is_file())
    return found


def axis_alignment(root: str | Path, scene_id: str, missing: Path) -> np.ndarray:
    """[4, 4] raw -> axis-aligned of `scene_id` from the info files under `root`; `missing`: the meta file that
    would have held it, named in the error when no info file has the scene."""
    files = info_files(root)
    for path in files:
        table = scene_alignments(path)
        if scene_id in table:
            return table[scene_id].copy()
    if not files:
        raise Loc3rError(f"{missing}: file not found, and no EmbodiedScan info file ({Path(root) / INFO_DIRS[0]}/"
                         f"{INFO_PATTERN}.json or .pkl) to take {scene_id}'s axis alignment from")
    raise Loc3rError(f"{missing}: file not found, and no entry scannet/{scene_id} in "
                     f"{', '.join(str(f) for f in files)} to take its axis alignment from")


def scene_alignments(path: Path) -> dict[str, np.ndarray]:
    """{scene_id: [4, 4] raw -> axis-aligned} of the ScanNet scans of one info file (read once per version)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    return _scene_alignments(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _scene_alignments(path: Path, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    data = read_pickle(path) if path.suffix == ".pkl" else _read_json(path)
    if isinstance(data, dict) and "data_list" in data:
        data = data["data_list"]
    if isinstance(data, list):  # EmbodiedScan's: one entry per scan, named by sample_idx
        entries = {}
        for k, e in enumerate(data):
            if not isinstance(e, dict) or not isinstance(e.get("sample_idx"), str):
                raise Loc3rError(f"{path}: data_list entry {k} has no 'sample_idx' (as 'scannet/scene0000_00')")
            entries[e["sample_idx"]] = e
    elif isinstance(data, dict):  # LLaVA-3D's: {"scannet/<scene_id>": {...}}
        entries = data
    else:
        raise Loc3rError(f"{path}: expected EmbodiedScan's {{'data_list': [...]}} or LLaVA-3D's "
                         f"{{'scannet/<scene_id>': {{...}}}}, got {type(data).__name__}")
    out = {}
    for key, e in entries.items():
        dataset, _, scene_id = str(key).partition("/")
        if dataset != "scannet" or not scene_id:
            continue
        if not isinstance(e, dict):
            raise Loc3rError(f"{path}: entry {key!r} is {type(e).__name__}, expected a mapping")
        out[scene_id] = _matrix(path, key, e.get("axis_align_matrix", np.eye(4)))
    return out


def _matrix(path: Path, key: str, value) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise Loc3rError(f"{path}: entry {key!r} axis_align_matrix must be a 4x4 matrix of finite numbers")
    return m


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Loc3rError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise Loc3rError(f"{path}: not valid JSON ({e})") from None


# ---------------------------------------------------------------------------------------------------------
# Pickles that can only hold data
# ---------------------------------------------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something that is not data (its message: what)."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles write bytes (`_codecs.encode(text, 'latin1')`), for that one encoding only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _data_constructors() -> dict[tuple[str, str], object]:
    """(module, name) -> what a data-only pickle may build: numpy arrays, dtypes and scalars under both numpy 1's
    and numpy 2's module names (pickles of either load with either), and plain containers. None of them runs code
    chosen by the file."""
    try:
        from numpy._core import multiarray, numeric  # numpy 2
    except ImportError:
        from numpy.core import multiarray, numeric  # numpy 1
    numpy_names = {("multiarray", "_reconstruct"): multiarray._reconstruct, ("multiarray", "scalar"): multiarray.scalar,
                   ("numeric", "_frombuffer"): numeric._frombuffer}
    allowed = {(f"numpy.{core}.{module}", name): obj for (module, name), obj in numpy_names.items()
               for core in ("core", "_core")}
    allowed.update({(builtins, obj.__name__): obj for obj in (set, frozenset, complex)
                    for builtins in ("builtins", "__builtin__")})  # protocol 2 names them as Python 2 did
    allowed.update({("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                    ("collections", "OrderedDict"): collections.OrderedDict, ("_codecs", "encode"): _latin1_bytes})
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """An unpickler whose only callables are _data_constructors()."""

    allowed = _data_constructors()

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise _Refused(f"{module}.{name}")
        return self.allowed[(module, name)]


def read_pickle(path: Path):
    """The data of a pickle file holding only numpy arrays and plain Python data; anything else (a class, a
    function: what could run code) is refused, naming what the file asked for."""
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f).load()
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except _Refused as e:
        raise Loc3rError(f"{path}: refused: the pickle asks for {e}, which is not numpy data or a plain Python "
                         "value (loading a pickle can run code; loc3r reads data only: convert a file you trust to "
                         "JSON, docs/data.md)") from None
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:
        raise Loc3rError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None
