"""``passes/shard_features.py`` alone on a graph Dynamo captured, with a group of 2 in one process
(a world of 1 serves the shape check's collectives)."""

import torch

def test_a_feature_split_that_does_not_close_is_left_whole():
    """The analysis on one process with a fake group of 2: a linear whose outputs meet a whole
    tensor (AdaLN modulation) is kept with its reason; the attention and MLP are split."""
    from dit_fx.passes.shard_features import FeatureContext, shard_features
    from dit_fx.runtime.tensor_ops import FeatureGroup

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mod = torch.nn.Linear(8, 8)
            self.up = torch.nn.Linear(8, 16)
            self.down = torch.nn.Linear(16, 8)

        def forward(self, x, t):
            h = x * self.mod(t)  # modulation: its output scales the whole stream
            return x + self.down(torch.nn.functional.gelu(self.up(h)))

    block = Block()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append((gm, example_inputs))
        return gm.forward

    x, t = torch.randn(1, 4, 8), torch.randn(1, 1, 8)
    torch.compile(block, backend=backend, fullgraph=True)(x, t)
    gm, inputs = graphs[0]
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())  # for the shape check
    try:
        ctx = FeatureContext(group=FeatureGroup(rank=0, world=2, group=dist.group.WORLD),
                             block_of={n.name: "blocks.0" for n in gm.graph.nodes if n.op not in ("placeholder", "output")},
                             example_inputs=tuple(inputs))
        shard_features(gm, ctx)
    finally:
        dist.destroy_process_group()
    kept = dict(ctx.record.kept)
    assert len(ctx.record.columns) == 1 and len(ctx.record.rows) == 1
    assert len(kept) == 1 and "whole feature dimension" in next(iter(kept.values()))
    # Rank 0's rows of ``up`` and columns of ``down``.
    weights = {n.target: getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    assert any(w.shape == (8, 8) and torch.equal(w, block.up.weight[:8]) for w in weights.values())
    assert any(w.shape == (8, 8) and torch.equal(w, block.down.weight[:, :8]) for w in weights.values())
