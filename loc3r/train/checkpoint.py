"""Training checkpoints: the model directory (config.json + model.safetensors + tokenizer) plus
`trainer_state.pt` (optimizer, scheduler, RNG states, step, data position), written atomically.

    RUN/checkpoints/step_0000500/   one checkpoint (a complete model directory: eval / infer load it)
    RUN/latest.json                 {"step": 500, "path": "checkpoints/step_0000500"}

trainer_state.pt holds tensors, numbers and strings only and is read with `torch.load(weights_only=True)`.
With FSDP2 the full (unsharded) model and optimizer states are gathered on rank 0 and written by it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from loc3r import parallel
from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir, atomic_path, write_json
from loc3r.model.config import read_config_json
from loc3r.model.loc3r import Loc3R
from loc3r.tiny.config import has_tiny_base
from loc3r.tiny.model import TinyLoc3R

TRAINER_STATE = "trainer_state.pt"
LORA_STATE = "lora.safetensors"  # a LoRA run's adapters, unmerged (for --resume; model.safetensors has them merged)


def _is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _full_states(wrapped, optimizer):
    """(model state or None, optimizer state) in a form any world size can load."""
    if _is_sharded(wrapped):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(wrapped, options=opts), get_optimizer_state_dict(wrapped, optimizer, options=opts)
    return None, optimizer.state_dict()


def save_checkpoint(run_dir: Path, step: int, position: int, wrapped, model, optimizer, scheduler,
                    info: parallel.DistInfo, tensor_names: list[str], extra: dict | None = None,
                    card: str | None = None) -> Path:
    """Write RUN/checkpoints/step_<step> and point RUN/latest.json at it (rank 0 writes; all ranks join).
    tensor_names: model.checkpoint_tensors() names, taken before wrapping (what the model directory stores); card:
    the model card, the checkpoint's README.md."""
    model_state, optim_state = _full_states(wrapped, optimizer)
    path = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    if info.is_main:
        with atomic_dir(path) as tmp:
            # FSDP: the gathered full tensors, named as the unsharded model names them
            if model_state is not None:
                merged = model.checkpoint_tensors(model_state)
                tensors = {k: merged[k] for k in tensor_names}
            else:
                tensors = None
            model.save_pretrained(tmp, tensors)
            if card is not None:
                (tmp / "README.md").write_text(card)
            if model.has_lora:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in model.lora_tensors(model_state).items()},
                          str(tmp / LORA_STATE), metadata={"scaling": repr(model.lora_scaling)})
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state()
            torch.save({"step": step, "data_position": position, "optimizer": optim_state,
                        "scheduler": scheduler.state_dict(), "rng": rng, "world_size": info.world_size,
                        "extra": json.dumps(extra or {})}, tmp / TRAINER_STATE)
        write_json(Path(run_dir) / "latest.json", {"step": step, "path": str(path.relative_to(run_dir))})
    if info.distributed:
        dist.barrier()
    return path


def _read_trainer_state(path: Path) -> dict:
    file = Path(path) / TRAINER_STATE
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise Loc3rError(f"{file}: no such file (not a training checkpoint)") from None
    except Exception as e:  # torch raises many types for corrupt files
        raise Loc3rError(f"{file}: unreadable trainer state ({type(e).__name__}: {e})") from None


def trainer_extra(path: Path) -> dict:
    """What the run stored with a checkpoint's trainer state (save_checkpoint's `extra`)."""
    return json.loads(_read_trainer_state(path).get("extra", "{}"))


def load_trainer_state(path: Path, wrapped, optimizer, scheduler,
                       info: parallel.DistInfo) -> tuple[int, int, dict]:
    """Restore optimizer, scheduler and RNG from a checkpoint; returns (step, data position, what the run stored with
    it: save_checkpoint's `extra`)."""
    state = _read_trainer_state(path)
    if _is_sharded(wrapped):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(wrapped, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
    else:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:  # parameter groups of another size: trained from another start or with LoRA
            raise Loc3rError(f"{path / TRAINER_STATE}: its optimizer state does not fit this run's parameters ({e}): "
                             "resume with the flags the run was started with") from None
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    return int(state["step"]), int(state["data_position"]), json.loads(state.get("extra", "{}"))


def load_lora_run(path: Path, model) -> None:
    """Resume a LoRA run: `model` is the run's initial model with its adapters added (its frozen weights are the
    initial ones, bit for bit); copy in the checkpoint's adapters and its other trained tensors."""
    from safetensors.torch import load_file

    file = Path(path) / LORA_STATE
    if not file.is_file():
        raise Loc3rError(f"{file}: no such file (the checkpoint was not written by a --lora run)")
    adapters = load_file(str(file))
    plain = load_file(str(Path(path) / "model.safetensors"))
    trained = {n for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    trained |= {n for n, _ in model.named_buffers() if n in plain}  # e.g. the heads' running statistics
    own = model.state_dict()
    missing = sorted((set(model.lora_tensors()) - set(adapters)) | (trained - set(plain)))
    if missing:
        raise Loc3rError(f"{path}: no tensor {missing[0]} for this LoRA run ({len(missing)} missing)")
    with torch.no_grad():
        for name, value in {**adapters, **{n: plain[n] for n in trained}}.items():
            own[name].copy_(value)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint RUN/latest.json points at, or None."""
    pointer = Path(run_dir) / "latest.json"
    if not pointer.is_file():
        return None
    try:
        rel = json.loads(pointer.read_text())["path"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise Loc3rError(f"{pointer}: corrupt pointer file (expected {{'step', 'path'}})") from None
    path = Path(run_dir) / rel
    if not (path / "config.json").is_file():
        raise Loc3rError(f"{pointer}: points at {path}, which is not a checkpoint")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A model directory from either a checkpoint directory or a run directory (its newest checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if not path.exists():
        raise Loc3rError(f"{path}: no such checkpoint or run directory")
    latest = latest_checkpoint(path)
    if latest is None:
        raise Loc3rError(f"{path}: not a checkpoint (no config.json) and not a run directory (no latest.json)")
    return latest


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (never the one latest.json points at), and the temporaries of
    saves a kill interrupted (`.step_*.tmp`, `.step_*.old`)."""
    for stale in (Path(run_dir) / "checkpoints").glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    latest = latest_checkpoint(run_dir)
    for old in ckpts[:-keep] if keep > 0 else []:
        if latest is None or old.resolve() != latest.resolve():
            shutil.rmtree(old, ignore_errors=True)


def load_model(path: str | Path) -> Loc3R:
    """The model of a run directory (its newest checkpoint) or of a checkpoint directory: a TinyLoc3R when its
    config.json has a tiny base's settings, else the paper's Loc3R."""
    checkpoint = resolve_checkpoint(path)
    tiny = has_tiny_base(read_config_json(checkpoint / "config.json"))
    return (TinyLoc3R if tiny else Loc3R).from_pretrained(checkpoint)


RUN_FILES = ("checkpoints", "latest.json", "log.jsonl", "settings.json", "manifest.json")  # what a run writes


def claim_run_dir(out: Path, resume: bool, overwrite: bool, is_main: bool) -> None:
    """Check --out before a run writes anything: absent or empty; with --resume a run to continue; with --overwrite a
    run started again (its RUN_FILES removed, by the main process; nothing else in the folder is touched). Anything
    else is refused in one line: an existing run is never replaced without --overwrite."""
    out = Path(out)
    if resume and overwrite:
        raise Loc3rError("--resume continues a run, --overwrite starts it again: pass one of the two")
    if out.exists() and not out.is_dir():
        raise Loc3rError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not ours:
            raise Loc3rError(f"{out}: not a run directory (no checkpoints, latest.json or log.jsonl): --resume "
                             "continues a run")
        return
    if not overwrite:
        raise Loc3rError(f"{out}: {'holds a run' if ours else 'is not empty'}: pass --resume to continue it, "
                         "--overwrite to start again, or another --out")
    if is_main:
        for name in ours:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


CARD = "README.md"  # a checkpoint's model card (train.loop.model_card)
EVALUATIONS = "## Evaluations"


def record_evaluation(checkpoint: Path, key: str, row: str, header: str) -> Path:
    """Enter one evaluation's headline numbers in the checkpoint's model card, as a row of its "Evaluations" table
    (the row of an earlier evaluation with the same key replaced); written atomically. key: the first cell (the
    benchmark, split and data); header: the table's header lines, used when the card has no such table yet."""
    card = Path(checkpoint) / CARD
    try:
        text = card.read_text()
    except FileNotFoundError:
        raise Loc3rError(f"{card}: no model card (a checkpoint written before cards existed)") from None
    head, _, table = text.partition(EVALUATIONS)
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]  # below the table's header
    rows = [line for line in rows if not line.startswith(f"| {key} |")] + [row]
    body = f"{head.rstrip()}\n\n{EVALUATIONS}\n\nHeld-out results of `loc3r eval` on this checkpoint.\n\n{header}\n" \
        + "\n".join(rows) + "\n"
    with atomic_path(card) as tmp:
        tmp.write_text(body)
    return card
