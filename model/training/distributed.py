"""Data-parallel training under torchrun: process-group setup and teardown, the per-rank share
of each epoch's draw, and the few collectives the loop needs.

A plain `python train.py` sees `Dist()` (rank 0 of 1): every helper is then a no-op, so the
single-process path runs exactly the code it ran before. Under `torchrun --nproc_per_node N`,
`setup()` joins the process group (NCCL on GPUs, Gloo on CPU) from torchrun's environment.

Batches: `--batch-size` is the GLOBAL batch (all ranks together, per optimiser step). Each epoch
every rank makes the same seeded draw over the whole training set (`training.epoch_order`), cuts
it into the global batches a single process would use, and keeps its own contiguous slice of each
(`rank_batches`): shares are disjoint, together they are the single-process batches, and the
number of steps (so the learning-rate schedule) does not depend on the world size.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import numpy as np
import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The only rank that validates, logs and writes checkpoints and bundles."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True when started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _stop_on_sigterm(signum, frame):  # torchrun forwards Ctrl-C to its workers as SIGTERM/SIGINT
    raise KeyboardInterrupt(f"signal {signum}")


def setup(device_name: str = "auto", timeout_s: float = 1800) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if there is one; returns this process's Dist and device.
    Under torchrun each rank takes GPU `LOCAL_RANK` (NCCL) when CUDA is asked for or available,
    else the CPU (Gloo)."""
    from model.nets.forward import pick_device

    if not launched():
        return Dist(), pick_device(device_name)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s),
                          **({"device_id": device} if device.type == "cuda" else {}))
    return Dist(rank, world, local), device


def peer_lost(error: BaseException) -> bool:
    """Does this error say another rank went away (rather than a bug in this one)?"""
    text = str(error).lower()
    return isinstance(error, td.DistError) or any(w in text for w in ("connection", "gloo", "nccl", "peer"))


def teardown(dist: Dist) -> None:
    if dist.active and td.is_initialized():
        td.destroy_process_group()


def rank_batches(order: np.ndarray, batch_size: int, dist: Dist, drop_last: bool = True) -> Iterator[np.ndarray]:
    """This rank's part of each global batch of `order` (one draw, identical on every rank).
    The global batches are the single-process ones (a short last batch is dropped unless it is
    the only one); each is split into `world` contiguous, near-equal, disjoint parts."""
    stop = len(order) - (len(order) % batch_size if drop_last and len(order) > batch_size else 0)
    for i in range(0, stop, batch_size):
        batch = order[i:i + batch_size]
        yield np.array_split(batch, dist.world)[dist.rank] if dist.active else batch


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """The module to call for training forwards: DistributedDataParallel around `model` when
    distributed (gradients averaged across ranks), else `model` itself."""
    if not dist.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def sync_batchnorm(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """BatchNorm statistics computed over the global batch (timm's converter keeps BatchNormAct).
    PyTorch syncs BatchNorm on GPUs only."""
    if not dist.active:
        return model
    if device.type != "cuda":
        raise ValueError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm does not run on the CPU); drop it for "
                         "CPU runs.")
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def from_main(value, dist: Dist):
    """`value` as rank 0 has it, on every rank (JSON through a byte tensor: nothing is unpickled)."""
    if not dist.active:
        return value
    dev = torch.device("cuda", dist.local_rank) if td.get_backend() == "nccl" else torch.device("cpu")
    data = json.dumps(value).encode() if dist.main else b""
    size = torch.tensor([len(data)], dtype=torch.long, device=dev)
    td.broadcast(size, 0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
    if dist.main:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    td.broadcast(buf, 0)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def sum_across(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sums over all ranks (e.g. images seen and loss totals of an epoch)."""
    if not dist.active:
        return values
    dev = torch.device("cuda", dist.local_rank) if td.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    td.all_reduce(t)
    return [type(v)(x) for v, x in zip(values, t.tolist())]


def barrier(dist: Dist) -> None:
    if dist.active:
        td.barrier()
