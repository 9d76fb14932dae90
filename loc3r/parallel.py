"""Process groups and model wrapping: the only place that knows about parallelism.

`compute_init()` works with and without torchrun (it reads RANK / WORLD_SIZE / LOCAL_RANK); `wrap_model()`
applies DistributedDataParallel, or FSDP2 (`fully_shard` per decoder layer, then the root) with activation
checkpointing and a bf16 mixed-precision policy for models too large to replicate (the 7B).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from loc3r.errors import Loc3rError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def compute_init(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device (cuda:<local_rank> or cpu)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    grouped_query_attention(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def default_device(name: str | None = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1 ...), else the GPU when there is one, else the CPU."""
    dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    grouped_query_attention(dev)
    return dev


def grouped_query_attention(dev: torch.device) -> None:
    """On a CPU, the LLM's grouped-query attention (the tiny's 2 key / value heads for 6 query heads, the 7B's 4 for
    28) runs as SDPA's own (enable_gqa): transformers otherwise repeats the keys and values per query head whenever
    an attention mask is given (what CUDA's fused kernels need), and on a CPU the flash kernel takes the mask and the
    groups as they are: the same outputs, ~7% of a tiny training step (docs/LOG.md). Transformers reads
    TRANSFORMERS_SDPA_FORCE_GQA at each call; a value the user set is kept. And under a CPU's bf16 autocast
    (`cpu_autocast`), SDPA runs in fp32 (`_sdpa_fp32_under_cpu_autocast`)."""
    if dev.type == "cpu":
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        AttentionInterface.register("sdpa", functools.partial(_sdpa_fp32_under_cpu_autocast, sdpa_attention_forward))


def _sdpa_fp32_under_cpu_autocast(sdpa, module, query, key, value, attention_mask, *args, **kwargs):
    """transformers' SDPA attention (`sdpa`), in fp32 when a CPU's autocast is on: the CPU's bf16 flash kernel is
    ~3x slower than its fp32 one on the tiny's shapes (forward and backward: 49 against 15 ms for a step's 64
    questions in one layer), and its math kernel 2x. The output comes back in the query's dtype."""
    if query.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return sdpa(module, query, key, value, attention_mask, *args, **kwargs)
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa(module, query.float(), key.float(), value.float(), attention_mask, *args, **kwargs)
    return out.to(query.dtype), weights


def cpu_autocast(setting: str, dev: torch.device, model: nn.Module) -> torch.dtype | None:
    """The dtype the LLM's matrix products run in under `--autocast SETTING` (Loc3R.llm_autocast): bf16 for
    'bf16'; for 'auto' bf16 on a CPU with AMX tiles (the products of a tiny training step run ~2.3x faster there,
    the whole step ~1.4x: benchmarks/bench_train_step.py) when the model's weights are fp32; else None (as the
    weights)."""
    if setting == "bf16":
        if dev.type != "cpu":
            raise Loc3rError("--autocast bf16 is for a CPU (a GPU run takes the preset's dtype)")
        return torch.bfloat16
    fp32 = next(model.parameters()).dtype == torch.float32
    if setting == "auto" and dev.type == "cpu" and fp32 and cpu_has_amx():
        return torch.bfloat16
    return None


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 matrices in AMX tiles (Intel Sapphire Rapids and later)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def compute_cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def print0(*args, **kwargs) -> None:
    """print on rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Mean of a Python number over ranks (for logging)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of the language model (the units of sharding and checkpointing)."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def wrap_model(model: nn.Module, info: DistInfo, strategy: str = "ddp", activation_checkpointing: bool = False,
               unused_parameters: bool = False):
    """Wrap for training. strategy: 'ddp' (replicate) or 'fsdp' (FSDP2, bf16 params in compute, fp32 reduce).
    unused_parameters: some steps leave some parameters out of the forward (DDP then finds them each step)."""
    if activation_checkpointing:
        # transformers' own per-layer checkpointing keeps parameter names (and so checkpoints) unchanged.
        for m in model.modules():
            if getattr(m, "supports_gradient_checkpointing", False):
                # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable
                if hasattr(m, "activation_checkpointing_enable"):
                    m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                break
    if not info.distributed:
        return model
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused_parameters)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    raise ValueError(f"unknown parallel strategy {strategy!r}: expected 'ddp' or 'fsdp'")

