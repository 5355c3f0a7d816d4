"""Minimal DiT-shaped modules for the planner's refusal cases (what real models rarely show)."""

from __future__ import annotations

import torch
from torch import nn


class ToyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, hidden_states, temb):
        return hidden_states + torch.tanh(self.lin(hidden_states) + temb)


class ToyDiT(nn.Module):
    """proj_in -> N blocks -> proj_out; ``mode`` injects one thing the rewrite must refuse.

    ok: plain stack.  graph_break: a graph break between blocks 1 and 2.  break_before: a graph
    break before the blocks (the timestep is dead after it).  reuse: block 0 is called
    again after the stack (weight sharing).  middle_skip: the output of block 1 (a middle block for
    Fn=1, Bn=1) is added after the stack (a middle value used after the middle).
    """

    def __init__(self, num_blocks: int = 4, dim: int = 8, mode: str = "ok"):
        super().__init__()
        self.mode = mode
        self.proj_in = nn.Linear(dim, dim)
        self.time = nn.Linear(1, dim)
        self.blocks = nn.ModuleList(ToyBlock(dim) for _ in range(num_blocks))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, hidden_states, timestep):
        temb = self.time(timestep[:, None])[:, None]
        h = self.proj_in(hidden_states)
        if self.mode == "break_before":
            torch._dynamo.graph_break()
        skip = None
        for i, block in enumerate(self.blocks):
            h = block(h, temb)
            if i == 1 and self.mode == "graph_break":
                torch._dynamo.graph_break()
            if i == 1:
                skip = h
        if self.mode == "reuse":
            h = self.blocks[0](h, temb)
        if self.mode == "middle_skip":
            h = h + skip
        return (self.proj_out(h),)


def toy_inputs(step: int = 0, batch: int = 2, tokens: int = 6, dim: int = 8):
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(batch, tokens, dim, generator=g)
    return dict(hidden_states=base * (1 + 0.001 * step), timestep=torch.full((batch,), 1.0 - 0.01 * step))


class TwinStreamBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.a, self.b = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, hidden_states, encoder_hidden_states):
        a, b = self.a(hidden_states), self.b(encoder_hidden_states)
        return (
            hidden_states + torch.tanh(a + b.mean(1, keepdim=True)),
            encoder_hidden_states - torch.tanh(b + a.mean(1, keepdim=True)),
        )


class TwinStreamDiT(nn.Module):
    """Two carried streams; with equal token counts their shapes coincide (ambiguous roles)."""

    def __init__(self, num_blocks: int = 4, dim: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList(TwinStreamBlock(dim) for _ in range(num_blocks))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, hidden_states, encoder_hidden_states):
        h, e = hidden_states * 1.0, encoder_hidden_states * 1.0
        for block in self.blocks:
            h, e = block(h, e)
        return (self.proj_out(h),)


class CacheWritingBlock(nn.Module):
    """A block that stores its keys into a cache tensor the caller passes in (a KV cache)."""

    def __init__(self, dim: int, index: int):
        super().__init__()
        self.lin, self.index = nn.Linear(dim, dim), index

    def forward(self, hidden_states, temb, kv_cache):
        key = self.lin(hidden_states)
        kv_cache[self.index] = key
        return hidden_states + torch.tanh(key + temb)


class CacheWritingDiT(nn.Module):
    """ToyDiT whose blocks fill ``kv_cache`` (num_blocks, *hidden.shape) on every call."""

    def __init__(self, num_blocks: int = 4, dim: int = 8):
        super().__init__()
        self.time = nn.Linear(1, dim)
        self.blocks = nn.ModuleList(CacheWritingBlock(dim, i) for i in range(num_blocks))

    def forward(self, hidden_states, timestep, kv_cache):
        temb = self.time(timestep[:, None])[:, None]
        h = hidden_states * 1.0
        for block in self.blocks:
            h = block(h, temb, kv_cache)
        return (h,)
