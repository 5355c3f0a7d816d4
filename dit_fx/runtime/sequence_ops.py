"""The modules a sequence-sharded graph calls: shard, gather, zero the padding, attention across ranks.

``passes/shard_sequence.py`` decides where they go; these only compute. Every collective is a
functional collective (``torch.distributed._functional_collectives``), so a graph holding them
stays one graph that Dynamo/Inductor trace and CUDA graphs capture.

Token layout. A *stream* (FLUX: image tokens, text tokens) of length ``L`` is cut into ``P`` equal
chunks of ``c = ceil(L / P)`` tokens; rank ``r`` holds tokens ``r*c .. r*c+c-1``, the missing ones
(``L`` not divisible by ``P``) as zero padding at the end of its chunk. A *layout* is the list of
streams a tensor's token dimension holds in order (a joint attention's ``cat([text, image])``:
two); locally it is the concatenation of this rank's chunk of each. Gathering every rank's local
tokens gives the "gathered order" (rank-major); ``Layout`` maps it to the true order and marks
the padding, so attention drops padded keys and the gather at the end returns exact tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed._functional_collectives as funcol


@dataclass(frozen=True)
class Layout:
    """Streams ``(name, length)`` along a token dimension, sharded over ``world`` ranks."""

    streams: Tuple[Tuple[str, int], ...]
    world: int

    def chunk(self, length: int) -> int:
        return math.ceil(length / self.world)

    @property
    def full(self) -> int:
        return sum(length for _, length in self.streams)

    @property
    def local(self) -> int:
        return sum(self.chunk(length) for _, length in self.streams)

    @property
    def padded(self) -> bool:
        return any(length % self.world for _, length in self.streams)

    def local_offsets(self) -> List[int]:
        """Start of each stream's chunk in the local tokens (and the end, last)."""
        out = [0]
        for _, length in self.streams:
            out.append(out[-1] + self.chunk(length))
        return out

    def full_offsets(self) -> List[int]:
        out = [0]
        for _, length in self.streams:
            out.append(out[-1] + length)
        return out

    def rank_positions(self, rank: int) -> List[Optional[int]]:
        """For each local token of ``rank``: its position in the full (true) order, None if padding."""
        positions: List[Optional[int]] = []
        for (_, length), start in zip(self.streams, self.full_offsets()):
            c = self.chunk(length)
            positions += [start + i if i < length else None for i in range(rank * c, rank * c + c)]
        return positions

    def gathered_positions(self) -> List[Optional[int]]:
        return [p for r in range(self.world) for p in self.rank_positions(r)]

    def sub(self, first: int, last: int) -> "Layout":
        return Layout(self.streams[first:last], self.world)


# torch 2.13 renamed the all-gather (the old name warns); torch 2.11 has only the old one.
_all_gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor


def _index(values: Sequence[int], device: Any = None) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.long, device=device)


class ShardTokens(torch.nn.Module):
    """The full tensor -> this rank's tokens along ``dim`` (padding rows are zeros)."""

    def __init__(self, layout: Layout, rank: int, dim: int):
        super().__init__()
        self.layout, self.rank, self.dim = layout, rank, dim
        positions = layout.rank_positions(rank)
        self.pads = any(p is None for p in positions)
        # Row -1 of the source is a zero row appended when this rank has padding.
        rows = [p if p is not None else layout.full for p in positions]
        self.register_buffer("rows", _index(rows), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads:
            shape = list(x.shape)
            shape[self.dim] = 1
            x = torch.cat([x, x.new_zeros(shape)], dim=self.dim)
        return torch.index_select(x, self.dim, self.rows.to(x.device))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, layout={self.layout.streams}, world={self.layout.world}"


class GatherTokens(torch.nn.Module):
    """Every rank's tokens along ``dim`` -> the full tensor in true order (all-gather)."""

    def __init__(self, layout: Layout, dim: int, group: Any):
        super().__init__()
        self.layout, self.dim, self.group = layout, dim, group
        gathered = layout.gathered_positions()
        order = sorted(range(len(gathered)), key=lambda i: gathered[i] if gathered[i] is not None else math.inf)
        self.register_buffer("rows", _index(order[: layout.full]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = _all_gather(x.contiguous(), gather_dim=self.dim, group=self.group)
        return torch.index_select(full, self.dim, self.rows.to(x.device))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layout={self.layout.streams}, world={self.layout.world}"


class ZeroPads(torch.nn.Module):
    """Padding tokens back to zero after a block, so they add nothing to the decision's diff."""

    def __init__(self, layout: Layout, rank: int, dim: int, ndim: int):
        super().__init__()
        self.layout, self.dim = layout, dim
        keep = [0.0 if p is None else 1.0 for p in layout.rank_positions(rank)]
        shape = [1] * ndim
        shape[dim] = len(keep)
        self.register_buffer("keep", torch.tensor(keep).reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep.to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layout={self.layout.streams}"


@dataclass(frozen=True)
class SequenceGroups:
    """The context-parallel ranks: ``ulysses`` x ``ring`` = ``world``. Rank ``r`` (in the group)
    is Ulysses rank ``r % ulysses`` of its row and ring rank ``r // ulysses`` of its column; its
    tokens are chunk ``r``."""

    rank: int
    world: int
    ulysses: int
    ring: int
    group: Any  # all ranks
    ulysses_group: Any  # this rank's row (None when ulysses == 1)
    ring_group: Any  # this rank's column (None when ring == 1)


class SequenceAttention(torch.nn.Module):
    """``scaled_dot_product_attention`` of local queries against every rank's keys and values.

    Ulysses: an all-to-all trades heads for tokens (each rank then holds ``H/U`` heads of the
    row's tokens); ring: keys and values are all-gathered over the column (this is ring
    attention's result computed from gathered K/V, without the send/receive overlap). Padded keys
    are dropped before attention, so the result is exact; a key-padding mask ``[B, 1|H, 1, S]``
    travels with the keys. The output comes back to this rank's tokens and all heads.
    """

    def __init__(self, layout: Layout, groups: SequenceGroups):
        super().__init__()
        self.layout, self.groups = layout, groups
        gathered = layout.gathered_positions()
        self.drop = any(p is None for p in gathered)
        self.register_buffer("keys", _index([i for i, p in enumerate(gathered) if p is not None]), persistent=False)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None, **kwargs):
        g = self.groups
        q, k, v = (self._heads_for_tokens(t) for t in (query, key, value))
        mask = attn_mask
        if g.ring > 1:
            k, v = (_all_gather(t.contiguous(), gather_dim=2, group=g.ring_group) for t in (k, v))
        if mask is not None:
            mask = _all_gather(mask.contiguous(), gather_dim=mask.dim() - 1, group=g.group)
        if self.drop:
            keys = self.keys.to(k.device)
            k, v = torch.index_select(k, 2, keys), torch.index_select(v, 2, keys)
            mask = None if mask is None else torch.index_select(mask, mask.dim() - 1, keys)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
        return self._tokens_for_heads(out)

    def _heads_for_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, s, D] -> [B, H/U, U*s, D] (the row's tokens in rank order)."""
        u = self.groups.ulysses
        if u == 1:
            return x
        b, h, s, d = x.shape
        parts = x.reshape(b, u, h // u, s, d).transpose(0, 1).contiguous()  # [U, B, H/U, s, D]
        recv = funcol.all_to_all_single(parts.reshape(u * b, h // u, s, d), None, None, group=self.groups.ulysses_group)
        return recv.reshape(u, b, h // u, s, d).permute(1, 2, 0, 3, 4).reshape(b, h // u, u * s, d)

    def _tokens_for_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H/U, U*s, D] -> [B, H, s, D]."""
        u = self.groups.ulysses
        if u == 1:
            return x
        b, hu, us, d = x.shape
        s = us // u
        parts = x.reshape(b, hu, u, s, d).permute(2, 0, 1, 3, 4).contiguous()  # [U, B, H/U, s, D]
        recv = funcol.all_to_all_single(parts.reshape(u * b, hu, s, d), None, None, group=self.groups.ulysses_group)
        return recv.reshape(u, b, hu, s, d).transpose(0, 1).reshape(b, u * hu, s, d)

    def extra_repr(self) -> str:
        g = self.groups
        return f"ulysses={g.ulysses}, ring={g.ring}, layout={self.layout.streams}"
