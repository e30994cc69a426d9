"""Multi-GPU training with torch.distributed: torchrun set-up, rank helpers, and an all-gather of
embeddings that carries gradients, so a contrastive loss can see the global batch.

Launch with ``torchrun --standalone --nproc_per_node=N scripts/pretrain.py ...`` (``make pretrain
GPUS=N``). torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR`` and
``MASTER_PORT``); :func:`process_group` reads them, joins the group (NCCL on CUDA, gloo on CPU),
puts each process on ``cuda:LOCAL_RANK``, and tears the group down on exit. Without those
variables (a plain ``python``) it is a single process and no group is created.

Why the gathered loss gives exactly the single-process gradient
---------------------------------------------------------------
Rank r holds embeddings z_r of its B/W images. :func:`gather_with_grad` returns
Z = cat(z_0, ..., z_{W-1}) on every rank, and every rank computes the same global loss L(Z), so
there are W identical copies L^(0..W-1). Rank r's embeddings enter *every* copy, so by the chain
rule

    d(sum_r' L^(r')) / dz_r = sum_r' G^(r')[slice r],    G^(r') = dL^(r')/dZ on rank r'.

That is what the backward computes: all_reduce(SUM) of the incoming dL/dZ, then this rank's
slice. As the copies are equal, it is W * dL/dz_r, and rank r's parameter gradient is
W * (dL/dz_r)(dz_r/dtheta). DDP then *averages* parameter gradients over the W ranks:

    (1/W) sum_r W (dL/dz_r)(dz_r/dtheta) = sum_r (dL/dz_r)(dz_r/dtheta) = dL/dtheta,

the gradient a single process gets from the loss on the concatenated batch. A plain all_gather
whose backward only returns the local slice of the local copy's gradient (or one that detaches
the other ranks' parts) would give (1/W) dL/dtheta: the learning rate silently divided by W.
``torch.distributed.nn.functional.all_gather`` computes the same backward with reduce_scatter,
which gloo does not provide; all_reduce + slice works on both backends.

With the per-GPU loss (``distributed.loss_scope=per_gpu``, what the official code does) each rank
computes L(z_r) on its own samples and DDP's average gives d/dtheta of (1/W) sum_r L(z_r): the
mean of the per-rank losses, in which a sample never meets the other ranks' samples.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

BACKENDS = ("auto", "nccl", "gloo")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(RuntimeError):
    """A distributed set-up that cannot work; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Rank helpers (valid with or without a process group)
# ---------------------------------------------------------------------------------------------


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes logs, metrics and checkpoints (rank 0, or the only process)."""
    return get_rank() == 0


# ---------------------------------------------------------------------------------------------
# Set-up and teardown
# ---------------------------------------------------------------------------------------------


def torchrun_env() -> Optional[tuple[int, int, int]]:
    """(rank, world_size, local_rank) from torchrun's environment, or None when not launched by
    torchrun. A partial or malformed set is an error."""
    present = {k: os.environ.get(k) for k in TORCHRUN_VARS}
    if all(v is None for v in present.values()):
        return None
    missing = [k for k, v in present.items() if v is None]
    if missing:
        raise DistributedError(
            f"{', '.join(missing)} not set but {', '.join(k for k in present if k not in missing)}"
            " is: launch with torchrun (make pretrain GPUS=N), or unset all of "
            f"{', '.join(TORCHRUN_VARS)} for a single process")
    try:
        rank, world, local = (int(present[k]) for k in TORCHRUN_VARS)
    except ValueError:
        raise DistributedError(f"torchrun variables must be integers; got {present}") from None
    if not (0 <= rank < world and 0 <= local <= rank):
        raise DistributedError(f"inconsistent torchrun variables {present}: need "
                               "0 <= LOCAL_RANK <= RANK < WORLD_SIZE")
    return rank, world, local


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``. Under torchrun (``local_rank`` given) a CUDA
    device is ``cuda:LOCAL_RANK``; pick the GPUs with CUDA_VISIBLE_DEVICES, not ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name} but CUDA is not available here; use device=cpu")
        if local_rank is not None:
            if device.index is not None:
                raise DistributedError(
                    f"device={name} under torchrun: each rank uses cuda:LOCAL_RANK. Set "
                    "device=cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
            if local_rank >= torch.cuda.device_count():
                raise DistributedError(
                    f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are "
                    "visible: lower --nproc_per_node (GPUS=) to at most the number of GPUs")
            device = torch.device("cuda", local_rank)
    return device


def check_backend(name: str) -> str:
    """A process-group backend name: one of ``BACKENDS``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown; choose one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(name: str, device: torch.device) -> str:
    """``auto``: NCCL for CUDA devices, gloo for the CPU."""
    try:
        check_backend(name)
    except ValueError as err:
        raise DistributedError(f"distributed.backend {name!r} {err}") from None
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise DistributedError("distributed.backend=nccl needs CUDA devices; use "
                               "distributed.backend=gloo (or auto) with device=cpu")
    return name


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None
    owns_group: bool = False           # created by process_group (and destroyed by it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


@contextmanager
def process_group(backend: str = "auto", device: str = "auto",
                  timeout_min: float = 30.0) -> Iterator[DistEnv]:
    """Join the process group torchrun describes, yield this process's :class:`DistEnv`, and
    destroy the group on exit (also on an exception).

    * No torchrun variables, or WORLD_SIZE=1: a single process on ``device``, no group.
    * A group already initialised by the caller: it is used as is and left alone on exit.
    * Otherwise: ``init_process_group`` from the environment with ``backend`` (``auto``: NCCL
      for CUDA, gloo for CPU) and ``timeout_min`` for every collective; on CUDA each process is
      pinned to ``cuda:LOCAL_RANK`` before the group exists, as NCCL needs.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        launched = torchrun_env()
        local = launched[2] if launched else rank
        dev = resolve_device(device, local if world > 1 else None)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        yield DistEnv(rank, world, local, dev, dist.get_backend(), owns_group=False)
        return
    launched = torchrun_env()
    if launched is None or launched[1] == 1:
        yield DistEnv(device=resolve_device(device))
        return
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run a single process")
    rank, world, local = launched
    dev = resolve_device(device, local)
    chosen = resolve_backend(backend, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs = {"device_id": dev} if chosen == "nccl" else {}
    dist.init_process_group(chosen, timeout=datetime.timedelta(minutes=timeout_min), **kwargs)
    try:
        yield DistEnv(rank, world, local, dev, chosen, owns_group=True)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Collectives for the loss
# ---------------------------------------------------------------------------------------------


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather + cat in rank order. Backward: all_reduce(SUM) of dL/dZ, then this
    rank's slice (see the module docstring for why this is the exact gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()           # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order, differentiably. All ranks must
    pass the same shape (the DistributedSampler with drop_last guarantees it). Identity in a
    single process."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order, without gradients (labels)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def global_batch(features: torch.Tensor, labels: Optional[torch.Tensor]):
    """The global batch seen from every rank: gathered ``features`` (with gradients to this
    rank's part) and gathered ``labels`` (None stays None). Identity in a single process."""
    return gather_with_grad(features), None if labels is None else gather(labels)


@torch.no_grad()
def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over ranks (sum + divide, which every backend supports)."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def all_gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel around ``model`` when there is more than one process (every
    parameter takes part in every step, so no search for unused ones); ``model`` otherwise."""
    if not env.distributed:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DDP wrappers (its state_dict has no
    ``_orig_mod.`` / ``module.`` prefixes, so checkpoints fit any world size)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
