"""Worker processes: data-parallel training over the machine's cores (``--workers W``).

Every worker is a whole trainer with ``num_envs / W`` of the sessions and its own random
streams: it collects its own rollouts (or, for imitation, its own labelled states) and computes
gradients on them; the gradients are averaged across workers (``torch.distributed`` over gloo
on loopback) before every optimiser step, so all workers hold the same networks throughout.
Rank 0 is the calling process: it alone validates, keeps ``best.pt`` and snapshots, logs and
pushes; ``last.pt`` holds every worker's sessions, so ``--resume`` needs the same ``--workers``.

With one worker every call here is a no-op and nothing is started.

Under PyTorch's own launcher (``torchrun --nnodes N --nproc-per-node M -m streambed train ...``)
the processes are the launcher's, on one machine or several: each joins the group from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and runs
the same body, so the run is the one ``--workers N*M`` gives on one machine.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a worker waits for the others (rank 0 validates while they wait)."""


class Group:
    """This process's place among the workers; every method is collective (all must call it)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank = rank
        self.world = world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def average_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the workers (one all-reduce)."""
        if self.world == 1:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, the same on every worker (e.g. whether the budget is spent)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.broadcast(t, src=0)
        return bool(t.item())

    def shared(self, value: float) -> float:
        """Rank 0's ``value`` on every worker (e.g. the share of the budget spent)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, src=0)
        return float(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj`` on rank 0 (in rank order); an empty list elsewhere."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out or []

    def scatter(self, objs: list[Any] | None) -> Any:
        """Rank 0 hands ``objs[r]`` to worker r; returns this worker's."""
        if self.world == 1:
            assert objs is not None
            return objs[0]
        out: list[Any] = [None]
        dist.scatter_object_list(out, objs if self.is_main else None, src=0)
        return out[0]


def _join(rank: int, world: int, port: int) -> Group:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=TIMEOUT,
    )
    return Group(rank, world)


def _worker(rank: int, world: int, port: int, body: Callable[[Group], Any]) -> None:
    torch.set_num_threads(1)
    logging.disable(logging.INFO)  # rank 0 reports
    group = _join(rank, world, port)
    try:
        body(group)
    finally:
        dist.destroy_process_group()


def launched() -> tuple[int, int] | None:
    """``(rank, world)`` when a launcher (torchrun) started this process, else None."""
    env = os.environ
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return None
    return int(env["RANK"]), int(env["WORLD_SIZE"])


def run_workers(world: int, body: Callable[[Group], Any]) -> Any:
    """Run ``body(group)`` in ``world`` processes (this one is rank 0); returns rank 0's result.

    ``body`` must be picklable (a module-level function or a ``functools.partial`` of one).
    A worker that dies makes rank 0's next collective call raise; the rest are terminated.
    Under torchrun, this process is one of the launcher's ``WORLD_SIZE`` and starts none.
    """
    started = launched()
    if started is not None:
        return _run_launched(*started, body)
    if world == 1:
        return body(Group())
    from streambed.core.servers import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, world, port, body)) for r in range(1, world)]
    for p in procs:
        p.start()
    log.info("started %d worker processes (pids %s)", world - 1, [p.pid for p in procs])
    try:
        group = _join(0, world, port)
        try:
            return body(group)
        finally:
            dist.destroy_process_group()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
        if failed:
            log.error("worker processes exited with codes %s", failed)


def _run_launched(rank: int, world: int, body: Callable[[Group], Any]) -> Any:
    if rank:
        logging.disable(logging.INFO)  # rank 0 reports
    if world == 1:
        return body(Group())
    dist.init_process_group(
        "gloo", init_method="env://", rank=rank, world_size=world, timeout=TIMEOUT
    )
    log.info("joined %d processes started by torchrun (rank %d)", world, rank)
    try:
        return body(Group(rank, world))
    finally:
        dist.destroy_process_group()
