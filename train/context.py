"""The MindSpore context of a ``train`` process and its place in the cluster.

Shared by training (``train.loop``), evaluation (``train.eval``) and export
(``train.export``), so that none of them imports another for it. One process per device;
under ``msrun`` (see ``train.distributed``) every process is a data-parallel rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ibnedge.cpu_isa import apply_default_cpu_isa_cap
from ibnedge.errors import UserError


class TrainingError(UserError, RuntimeError):
    """A problem with the run's inputs, reported without a traceback by the CLI."""


@dataclass
class Cluster:
    device: str
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def msrun_role() -> Optional[str]:
    """msrun (MindSpore's dynamic-cluster launcher) runs this program as MS_SCHED once and MS_WORKER per rank."""
    role = os.environ.get("MS_ROLE")
    return role if role in ("MS_SCHED", "MS_WORKER") else None


def setup_context(device: Optional[str], mode: str) -> Cluster:
    """MindSpore context; joins the process group when started by msrun."""
    import mindspore as ms

    if device:
        try:
            ms.set_device(device)
        except (RuntimeError, ValueError) as exc:  # this MindSpore build lacks the device's plugin
            raise TrainingError("this MindSpore cannot use --device %s (%s)" % (device, str(exc).strip().splitlines()[0]))
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    device = ms.get_context("device_target")
    if device == "CPU":  # known only now when MindSpore chose; still before its first CPU kernel
        apply_default_cpu_isa_cap()
    role = msrun_role()
    if role is None:
        return Cluster(device)
    if mode != "graph":
        raise TrainingError("distributed training needs --mode graph")
    from mindspore.communication import get_group_size, get_rank, init

    init()
    if role == "MS_SCHED":
        # The scheduler only coordinates the ranks; init() returns when they are done.
        raise SystemExit(0)
    world, rank = get_group_size(), get_rank()
    _check_rank(rank)
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=world
    )
    return Cluster(device, rank, world)


def _check_rank(rank: int) -> None:
    """train.distributed names logs and failures by the rank it asked msrun for (MS_NODE_ID,
    from --node-rank); a rank table may assign others, otherwise they must agree."""
    asked = os.environ.get("MS_NODE_ID", "")
    if asked.isdigit() and not os.environ.get("RANK_TABLE_FILE") and int(asked) != rank:
        raise TrainingError("this process was started as rank %s but joined the cluster as rank %d; "
                            "give every node its own --node-rank" % (asked, rank))
