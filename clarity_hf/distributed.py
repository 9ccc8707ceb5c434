# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""One job over several processes (`accelerate launch`, `torchrun`): Accelerate's process state, and its closing."""

from __future__ import annotations

import os

import torch

__all__ = ["close_processes", "process_state"]


def process_state():
    """Accelerate's `PartialState` when launched as several processes (`accelerate launch`, `torchrun`), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    # gloo over CPU processes where there is no GPU (torchrun, or `accelerate launch --multi_gpu` on a CPU host:
    # accelerate's own `--cpu` launches a single process unless given an mpirun hostfile)
    return PartialState(
        cpu=not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
    )


def close_processes(state) -> None:
    """The end of a sharded job on every process: no process leaves (and tears its connections down) while the main
    one still writes, then each closes its process group (a process that exits with its gloo group still up can
    abort in the group's threads)."""
    if state is None:
        return
    state.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
