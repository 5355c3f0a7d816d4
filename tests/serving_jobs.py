"""Importable build/job functions for the worker-pool test (workers are spawned processes)."""

import torch

from toy_models import ToyDiT


def build():
    torch.manual_seed(0)
    return ToyDiT(num_blocks=6)


def generate(model, seed: int, steps: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 6, 8, generator=g)
    with torch.no_grad():
        for step in range(steps):
            x = x - model(hidden_states=x, timestep=torch.full((1,), 1.0 - step / steps))[0] / steps
    return x
