"""Safe reading of official CUT3R checkpoints and their conversion to our `config.json` + `model.safetensors`.

Official format (`cut3r_512_dpt_4_64.pth`, `cut3r_224_linear_4.pth`):
    torch.save({'args': argparse.Namespace(model="ARCroco3DStereo(ARCroco3DStereoConfig(...))"), 'model': state_dict})
(checkpoints saved by the hydra training script hold an omegaconf DictConfig as 'args', with the same `model`).
The official loader unpickles arbitrary objects and eval()s that string. Here nothing from the file is executed:

* the zip's `data.pkl` goes through a `pickle.Unpickler` whose `find_class` hands out only our own stand-ins
  (tensor rebuild, storage dtypes, plain containers and builtin types, and inert attribute holders for
  argparse.Namespace and the omegaconf classes that hydra-trained checkpoints pickle as `args`); every other global
  is refused, so a `__reduce__` calling os.system never resolves. Persistent ids are resolved to the zip's storage
  records by us.
* the constructor string is parsed with `ast`: one call of one call with keyword literals (`inf` allowed).

Conversion keeps, in float32, only the tensors of the camera-token path (`Cut3r`); the point-map / RGB / ray-map
branches and the heads except the pose MLP are dropped and their prefixes listed in config.json.
"""

from __future__ import annotations

import ast
import collections
import json
import logging
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir, check_replaceable
from loc3r.priors.cut3r import (CONFIG_NAME, FINGERPRINT_NAME, FORMAT, WEIGHTS_NAME, Cut3r, Cut3rConfig,
                                fingerprint_record, load_weights)

log = logging.getLogger(__name__)
INF = float("inf")

# Official constructor defaults: ARCroco3DStereoConfig.__init__ and CrocoConfig.__init__ (norm_layer left out:
# always LayerNorm(eps=1e-6)). Arguments outside these two lists make the official constructor fail, and us too.
ARCROCO_DEFAULTS = dict(
    output_mode="pts3d", head_type="linear", depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF),
    pose_mode=("exp", -INF, INF), freeze="none", landscape_only=True, patch_embed_cls="PatchEmbedDust3R",
    ray_enc_depth=2, state_size=324, local_mem_size=256, state_pe="2d", state_dec_num_heads=16, depth_head=False,
    rgb_head=False, pose_conf_head=False, pose_head=False)
CROCO_DEFAULTS = dict(
    img_size=224, patch_size=16, mask_ratio=0.9, enc_embed_dim=768, enc_depth=12, enc_num_heads=12,
    dec_embed_dim=512, dec_depth=8, dec_num_heads=16, mlp_ratio=4, norm_im2_in_dec=True, pos_embed="cosine")

# Top-level names of the official state_dict that the camera-token path runs / never runs.
RUN_ROOTS = {"patch_embed", "enc_blocks", "enc_norm", "register_tokens", "decoder_embed_state", "decoder_embed",
             "pose_token", "pose_retriever", "dec_blocks", "dec_blocks_state", "dec_norm", "dec_norm_state"}
DROPPED_ROOTS = {"masked_img_token", "masked_ray_map_token", "patch_embed_ray_map", "enc_blocks_ray_map",
                 "enc_norm_ray_map", "downstream_head"}
OFFICIAL_POSE_HEAD = "downstream_head.pose_head.mlp."  # -> our `pose_head.` (same in linear and dpt heads)


# ---------------------------------------------------------------- restricted unpickling of the .pth zip

class _Inert:
    """Stand-in for a plain-data class (argparse.Namespace, omegaconf containers and nodes): it only keeps the
    attributes the pickle sets. None of the original class's code is imported or run."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass


class _StorageType:
    """Stand-in for `torch.HalfStorage` etc.: only names a dtype, is never called."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}
# builtin types that appear as values (e.g. omegaconf's `object_type=dict`); protocol 2 writes py2 names
_BUILTIN_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
                  "long": int, "float": float, "str": str, "unicode": str, "bool": bool, "bytes": bytes}


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
    """Our `torch._utils._rebuild_tensor_v2`: a strided view of an already-read storage (bounds checked)."""
    if not (isinstance(storage, torch.Tensor) and isinstance(offset, int)
            and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise pickle.UnpicklingError("malformed tensor record")
    return torch.as_strided(storage, size, stride, offset)


def _rebuild_parameter(data, requires_grad=False, hooks=None) -> torch.Tensor:
    """Our `torch._utils._rebuild_parameter`: parameters are loaded as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("malformed parameter record")
    return data


def _plain_dict(*args) -> dict:
    """Our `collections.defaultdict`: a plain dict (the pickle fills it; its default factory is never kept)."""
    return {}


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _plain_dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler of a torch zip checkpoint's data.pkl that can build only tensors, plain data and _Inert holders."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}  # storage key -> flat tensor (aliased keys share one)
        self.inert_classes: dict[str, type] = {}  # fresh per load: nothing a file sets on them outlives it

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module in ("builtins", "__builtin__") and name in _BUILTIN_TYPES:
            return _BUILTIN_TYPES[name]
        # the args of released checkpoints: argparse.Namespace, or omegaconf containers from hydra training runs
        if (module, name) in (("argparse", "Namespace"), ("typing", "Any")) or module.startswith("omegaconf."):
            return self.inert_classes.setdefault(f"{module}.{name}", type(name, (_Inert,), {"__module__": module}))
        raise pickle.UnpicklingError(f"refused to load global '{module}.{name}' (only tensors and plain data allowed)")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel), as torch.save writes it
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _, numel = pid
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"missing storage record {name}") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {name} has {info.file_size} bytes, expected {numel * itemsize}")
        raw = torch.empty(info.file_size, dtype=torch.uint8)
        buf, filled = raw.numpy(), 0
        with self.archive.open(info) as f:
            while filled < len(buf):
                n = f.readinto(memoryview(buf)[filled:])
                if not n:
                    raise pickle.UnpicklingError(f"storage {name} is truncated")
                filled += n
        return raw.view(dtype)


def read_official_checkpoint(path: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Official .pth -> (model constructor string, state_dict); executes nothing from the file."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise Loc3rError(f"{path}: not a torch zip checkpoint ({e})") from e
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise Loc3rError(f"{path}: not a torch zip checkpoint (no single <archive>/data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise Loc3rError(f"{path}: big-endian checkpoints are not supported")
        try:
            with archive.open(pkls[0]) as f:
                obj = _RestrictedUnpickler(f, archive, prefix).load()
        except Loc3rError:
            raise
        except Exception as e:  # any unpickling failure (refused global, malformed data) is a bad file
            raise Loc3rError(f"{path}: {e}") from e
    if not isinstance(obj, dict) or "args" not in obj or "model" not in obj:
        raise Loc3rError(f"{path}: expected a dict with 'args' and 'model', got {type(obj).__name__}"
                         + (f" with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else ""))
    model_string = _model_string(obj["args"])
    if model_string is None:
        raise Loc3rError(f"{path}: 'args' has no 'model' constructor string")
    state_dict = obj["model"]
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise Loc3rError(f"{path}: 'model' is not a state_dict of named tensors")
    if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from a DDP-wrapped model
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return model_string, state_dict


def _model_string(args) -> str | None:
    """`args.model` of an unpickled Namespace stand-in, or of an omegaconf DictConfig one (`_content['model']._val`)."""
    model = getattr(args, "model", None)
    content = getattr(args, "_content", None)
    if model is None and isinstance(content, dict):
        model = getattr(content.get("model"), "_val", None)
    return model if isinstance(model, str) else None


# ---------------------------------------------------------------- the constructor string, without eval

class _InfToConstant(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name):
        if node.id == "inf":
            return ast.copy_location(ast.Constant(INF), node)
        raise ValueError(f"name {node.id!r} is not a literal")


def parse_model_string(model_string: str) -> dict:
    """"ARCroco3DStereo(ARCroco3DStereoConfig(k=v, ...))" -> {k: v} (literals only; `inf` / `-inf` allowed)."""
    try:
        outer = ast.parse(model_string.strip(), mode="eval").body
        if not (isinstance(outer, ast.Call) and isinstance(outer.func, ast.Name) and outer.func.id == "ARCroco3DStereo"
                and len(outer.args) == 1 and not outer.keywords):
            raise ValueError("expected ARCroco3DStereo(<config>)")
        inner = outer.args[0]
        if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
                and inner.func.id == "ARCroco3DStereoConfig" and not inner.args):
            raise ValueError("expected ARCroco3DStereoConfig(keyword=value, ...)")
        kwargs = {}
        for kw in inner.keywords:
            if kw.arg is None:
                raise ValueError("**kwargs are not allowed")
            value = ast.literal_eval(_InfToConstant().visit(kw.value))
            kwargs[kw.arg] = tuple(value) if isinstance(value, list) else value
        return kwargs
    except (SyntaxError, ValueError, TypeError) as e:
        raise Loc3rError(f"model string {model_string[:60]!r}...: {e}") from e


def official_kwargs(stated: dict) -> tuple[dict, dict]:
    """Stated kwargs -> (ARCroco3DStereoConfig kwargs, croco kwargs) as the official `load_model` builds them.

    Like `load_model`: ManyAR_PatchEmbed becomes PatchEmbedDust3R and landscape_only is forced to False.
    """
    unknown = stated.keys() - ARCROCO_DEFAULTS.keys() - CROCO_DEFAULTS.keys() - {"norm_layer"}
    if unknown:
        raise Loc3rError(f"model string: unknown constructor argument {sorted(unknown)[0]!r}")
    arcroco = {k: stated.get(k, v) for k, v in ARCROCO_DEFAULTS.items()}
    croco = {k: stated.get(k, v) for k, v in CROCO_DEFAULTS.items()}
    arcroco["landscape_only"] = False
    if arcroco["patch_embed_cls"] == "ManyAR_PatchEmbed":
        arcroco["patch_embed_cls"] = "PatchEmbedDust3R"
    return arcroco, croco


# ---------------------------------------------------------------- config and weights of the camera-token path

def _count(state_dict: dict, prefix: str) -> int:
    """Number of blocks `prefix.<i>.` in the state_dict."""
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def config_from_official(model_string: str, state_dict: dict[str, torch.Tensor], source) -> Cut3rConfig:
    """Our config from the constructor string; sizes are read from tensor shapes and must agree with the string."""
    stated = parse_model_string(model_string)
    arcroco, croco = official_kwargs(stated)
    if arcroco["output_mode"] != "pts3d+pose" or not arcroco["pose_head"]:
        raise Loc3rError(f"{source}: model has no pose head (output_mode={arcroco['output_mode']!r}), no camera token")
    if arcroco["head_type"] not in ("linear", "dpt"):
        raise Loc3rError(f"{source}: unsupported head_type {arcroco['head_type']!r}")
    if tuple(arcroco["pose_mode"]) != ("exp", -INF, INF):
        raise Loc3rError(f"{source}: unsupported pose_mode {arcroco['pose_mode']!r} (only ('exp', -inf, inf))")
    if arcroco["state_pe"] not in ("1d", "2d"):
        raise Loc3rError(f"{source}: unsupported state_pe {arcroco['state_pe']!r}")
    if not str(croco["pos_embed"]).startswith("RoPE") or not croco["norm_im2_in_dec"]:
        raise Loc3rError(f"{source}: unsupported pos_embed={croco['pos_embed']!r} / norm_im2_in_dec")
    needed = ["patch_embed.proj.weight", "decoder_embed.weight", "register_tokens.weight", "pose_retriever.mem",
              "enc_blocks.0.mlp.fc1.weight"]
    for key in needed:
        if key not in state_dict:
            raise Loc3rError(f"{source}: missing key {key!r}")
    enc_dim, _, patch, _ = state_dict["patch_embed.proj.weight"].shape
    img_size = croco["img_size"]
    config = Cut3rConfig(
        enc_embed_dim=enc_dim, enc_depth=_count(state_dict, "enc_blocks."), enc_num_heads=croco["enc_num_heads"],
        dec_embed_dim=state_dict["decoder_embed.weight"].shape[0], dec_depth=_count(state_dict, "dec_blocks."),
        dec_num_heads=croco["dec_num_heads"], state_dec_num_heads=arcroco["state_dec_num_heads"],
        state_size=state_dict["register_tokens.weight"].shape[0], state_pe=arcroco["state_pe"],
        mem_size=state_dict["pose_retriever.mem"].shape[1], mem_depth=_count(state_dict, "pose_retriever.read_blocks."),
        mlp_ratio=state_dict["enc_blocks.0.mlp.fc1.weight"].shape[0] / enc_dim, patch_size=patch,
        rope_base=float(croco["pos_embed"][len("RoPE"):]),
        image_size=max(img_size) if isinstance(img_size, tuple) else int(img_size), head_type=arcroco["head_type"])
    shape_vs_string = dict(enc_embed_dim="enc_embed_dim", enc_depth="enc_depth", dec_embed_dim="dec_embed_dim",
                           dec_depth="dec_depth", state_size="state_size", mem_size="local_mem_size",
                           mlp_ratio="mlp_ratio", patch_size="patch_size")
    for field_name, arg in shape_vs_string.items():
        if arg in stated and stated[arg] != getattr(config, field_name):
            raise Loc3rError(f"{source}: {arg}={stated[arg]} in the model string but the weights have "
                             f"{getattr(config, field_name)}")
    for dim, heads, what in ((config.enc_embed_dim, config.enc_num_heads, "encoder"),
                             (config.dec_embed_dim, config.dec_num_heads, "decoder"),
                             (config.dec_embed_dim, config.state_dec_num_heads, "state decoder")):
        if not isinstance(heads, int) or heads <= 0 or dim % heads or (dim // heads) % 4:
            raise Loc3rError(f"{source}: {what} width {dim} / {heads} heads is not a multiple of 4 (RoPE2D)")
    return config


def split_state_dict(state_dict: dict[str, torch.Tensor], source) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official state_dict -> (tensors of the camera-token path under our names, sorted dropped prefixes)."""
    kept, dropped = {}, set()
    for key, value in state_dict.items():
        root = key.split(".")[0]
        if key.startswith(OFFICIAL_POSE_HEAD):
            kept["pose_head." + key[len(OFFICIAL_POSE_HEAD):]] = value
        elif root in RUN_ROOTS or key.startswith("downstream_head.pose_head."):
            kept[key] = value  # an unexpected key here is reported by `load_weights`
        elif root in DROPPED_ROOTS:
            dropped.add(".".join(key.split(".")[:2]) if root == "downstream_head" else root)
        else:
            raise Loc3rError(f"{source}: unknown key {key!r}")
    return kept, sorted(dropped)


def previous_conversion(out_dir: Path) -> bool:
    """Whether out_dir holds exactly what convert_cut3r writes (its config.json in our format, the weights and, since
    it is written, their fingerprint)."""
    names = {p.name for p in out_dir.iterdir()}
    if not {CONFIG_NAME, WEIGHTS_NAME} <= names <= {CONFIG_NAME, WEIGHTS_NAME, FINGERPRINT_NAME}:
        return False
    try:
        return json.loads((out_dir / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def convert_cut3r(in_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Official CUT3R .pth -> `out_dir` with config.json + model.safetensors (float32), written atomically.

    An existing out_dir is replaced only when it is empty or a previous conversion, or with overwrite=True: anything
    else may be the user's (a file, another model) and is refused. Returns the config.json content. Raises
    Loc3rError("<file>: <problem>") on any bad input.
    """
    from safetensors.torch import save_file

    in_path, out_dir = Path(in_path), Path(out_dir)
    check_replaceable(out_dir, overwrite, previous_conversion)
    model_string, state_dict = read_official_checkpoint(in_path)
    config = config_from_official(model_string, state_dict, in_path)
    kept, dropped = split_state_dict(state_dict, in_path)
    with torch.device("meta"):  # no random init: every tensor is replaced by the checkpoint's
        model = Cut3r(config)
    load_weights(model, kept, in_path)
    meta = dict(format=FORMAT, config=asdict(config), dropped_prefixes=dropped,
                source=dict(file=in_path.name, model_string=model_string))
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / FINGERPRINT_NAME).write_text(json.dumps(fingerprint_record(tmp)) + "\n")  # once per conversion
    log.info("converted %s -> %s: kept %d tensors, dropped (never run) %s",
             in_path, out_dir, len(kept), ", ".join(dropped))
    return meta
