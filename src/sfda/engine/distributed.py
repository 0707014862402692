"""Data-parallel training with PyTorch's own engine (DistributedDataParallel).

Launch any training command under ``torchrun``::

    torchrun --standalone --nproc-per-node 2 -m sfda train-source ...

``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`context` reads
them and joins the process group (``nccl`` on GPUs, ``gloo`` on CPU). Every
rank walks the same seeded permutation and takes its share of each global batch
(``batch_size`` is the global batch), DDP averages the gradients, and only rank
0 writes logs, checkpoints and configs. Per-slice priors travel with their
slices, so the class-ratio prior stays per slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sfda.errors import SfdaError
from sfda.progress import say


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


#: ``auto`` resolved once per process (the log says it once)
_AUTO: list[str] = []


def resolve_device(device: str) -> str:
    """The one place ``device: auto`` is decided: ``cuda`` when torch sees a GPU, else ``cpu``,
    said once in the log (``device: cpu (auto)``). Other names come back as given."""
    if device != "auto":
        return device
    if not _AUTO:
        _AUTO.append("cuda" if torch.cuda.is_available() else "cpu")
        if is_main():
            say(f"device: {_AUTO[0]} (auto)")
    return _AUTO[0]


def check_device(device: str) -> torch.device:
    """``device`` as a torch device; a missing GPU or an unknown name is the user's error."""
    device = resolve_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SfdaError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise SfdaError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N")
    return torch.device(device)


def world_from_env() -> Dist:
    return Dist(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)))


def is_main() -> bool:
    """True on rank 0 (and in a plain single-process run): the process that writes files."""
    return world_from_env().main


def context(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    dist = world_from_env()
    if not dist.active:
        return dist
    import torch.distributed as td

    if not td.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist


def leave(finished: bool) -> None:
    """Leave the process group before the interpreter exits: a rank that exits while another still
    talks to it can abort in gloo's threads ("terminate called without an active exception"). A
    rank that ``finished`` waits for the others first; one that failed leaves at once (torchrun
    then stops the others)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        if finished:
            td.barrier()
        td.destroy_process_group()


def device_for(device: str) -> str:
    """``cuda`` (and ``auto`` on a GPU) under torchrun means this rank's GPU (LOCAL_RANK)."""
    device = resolve_device(device)
    if device == "cuda" and world_from_env().active:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    if not dist.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def shard(idx: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's share of one global batch (every rank holds the same ``idx``)."""
    return idx[dist.rank::dist.world] if dist.active else idx


def check_batch(batch_size: int, dist: Dist) -> None:
    if dist.active and batch_size < dist.world:
        raise SfdaError(f"optim.batch_size={batch_size} is the global batch and must be at least the number of "
                        f"processes ({dist.world}); raise optim.batch_size")


def mean_over_ranks(values: dict[str, float], dist: Dist) -> dict[str, float]:
    """Average logged numbers over ranks so rank 0 logs the global figures."""
    if not dist.active or not values:
        return values
    import torch.distributed as td

    keys = sorted(values)
    # NCCL reduces CUDA tensors only; gloo takes CPU ones.
    device = f"cuda:{torch.cuda.current_device()}" if td.get_backend() == "nccl" else "cpu"
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    td.all_reduce(t)
    return {k: float(v) / dist.world for k, v in zip(keys, t.cpu().tolist())}


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def agree(dist: Dist, ok: bool) -> bool:
    """Every rank learns whether rank 0 got through its part (a claim, an import): a barrier that
    does not hang the other ranks when rank 0 stops with an error first (it sends ``ok=False``)."""
    if not dist.active:
        return ok
    import torch.distributed as td

    flag = [bool(ok)]
    td.broadcast_object_list(flag, src=0)
    return bool(flag[0])


def gather(items: list, dist: Dist) -> list:
    """Every rank's ``items`` joined, on every rank (rank order); a single process's own."""
    if not dist.active:
        return items
    import torch.distributed as td

    out: list = [None] * dist.world
    td.all_gather_object(out, items)
    return [x for part in out for x in part]
