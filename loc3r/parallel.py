"""Process groups and model wrapping: the only place that knows about parallelism.

`compute_init()` works with and without torchrun (it reads RANK / WORLD_SIZE / LOCAL_RANK); `wrap_model()`
applies DistributedDataParallel, or FSDP2 (`fully_shard` per decoder layer, then the root) with activation
checkpointing and a bf16 mixed-precision policy for models too large to replicate (the 7B).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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
    TRANSFORMERS_SDPA_FORCE_GQA at each call; a value the user set is kept."""
    if dev.type == "cpu":
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")


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

