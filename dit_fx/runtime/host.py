"""The one seam where a cache decision reads device values on the host.

Every host-side input of a decision goes through a ``HostReads``: the two sums of a relative L1
diff (``diff_sums``) and the timestep (``scalar``). A parallel run gives its contexts a
``HostReads`` that reduces across ranks in exactly these two places, so every rank takes the same
decision; one process uses ``LOCAL``.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import torch


class HostReads:
    """Reads on this process only (one sync per call)."""

    def diff_sums(self, num: torch.Tensor, den: torch.Tensor) -> List[float]:
        """``[num, den]`` of a relative L1 diff as floats (fp32 scalars on the device)."""
        return torch.stack([num, den]).tolist()

    def scalar(self, value: torch.Tensor) -> float:
        """The first element of ``value`` (a timestep) as a float."""
        return float(value.reshape(-1)[0])

    def floats(self, values: Sequence[float]) -> List[float]:
        """Host floats every rank must agree on (a timestep read asynchronously): as they are here."""
        return list(values)


LOCAL = HostReads()


class ReducedHostReads(HostReads):
    """Reads summed over a process group (``torch.distributed``): each rank holds a shard of the
    streams (context parallelism), so the diff's two sums are all-reduced and every rank computes
    the same relative L1 of the whole tensors, and takes the same decision. The timestep is the
    same on every rank and read locally."""

    def __init__(self, group: Any = None):
        self.group = group

    def diff_sums(self, num: torch.Tensor, den: torch.Tensor) -> List[float]:
        import torch.distributed as dist

        sums = torch.stack([num, den])
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.group)
        return sums.tolist()


def ratio(num: float, den: float) -> float:
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def relative_l1(reference: torch.Tensor, current: torch.Tensor, host: HostReads = LOCAL) -> float:
    """mean|ref - cur| / mean|ref|; inf when the reference is all zeros.

    Sums are accumulated in fp32 without materialising fp32 copies; one host read for both.
    """
    num = torch.linalg.vector_norm(reference - current, 1, dtype=torch.float32)
    den = torch.linalg.vector_norm(reference, 1, dtype=torch.float32)
    return ratio(*host.diff_sums(num, den))
