"""Context parallelism derived from the graph (``ParallelConfig(ulysses=U, ring=R)``), on CPU ranks
(gloo): each rank holds a share of the tokens inside the blocks, attention spans the ranks, and
the output equals the single-process run; with the cache on, every rank takes the single-process
decisions (the diff's sums are all-reduced). One spawn per world size runs every model, to keep
the suite short.
"""

import pytest

from parallel_harness import CACHED, assert_like_one_process, spawn as _spawn

EXACT = [("models", "flux"), ("models", "wan"), ("models", "qwenimage"), ("models", "hunyuanvideo"),
         ("models", "sd3"), ("zoo", "cogvideox"), ("zoo", "ltx"), ("zoo", "flux2")]


def _check(ranks, key):
    for r in ranks:
        res = r[key]
        assert res["reason"] is None, f"{key}: refused: {res['reason']}"
        assert res["attentions"] > 0 and res["sharded"] and res["supported"]
        assert_like_one_process(res, key)


@pytest.mark.timeout(600)
def test_ulysses_over_two_ranks_equals_one_process_for_every_family(tmp_path):
    jobs = [(s, n, 0.0) for s, n in EXACT] + [("models", n, t) for n, t in CACHED.items()]
    jobs += [("models", n, t, {"fuse_linears": True}) for n, t in CACHED.items()]  # joined Linears on the token shards
    ranks = _spawn(tmp_path, 2, dict(ulysses=2), jobs)
    for _, name in EXACT:
        _check(ranks, (name, 0.0))
    for name, threshold in CACHED.items():
        assert ranks[0][(name, threshold)]["expected_cached"], f"{name}: the threshold must cache some steps"
        _check(ranks, (name, threshold))
        _check(ranks, (name, threshold, "fuse_linears"))
        assert all(r[(name, threshold, "fuse_linears")]["fused"] == {"flux": 24, "wan": 15}[name] for r in ranks)
    # The dump shows the shard, the collectives and the gather.
    text = open(tmp_path / "dump" / "capture_0" / "captured_graph.py").read()
    for op in ("shard_tokens", "sequence_attention", "gather_tokens"):
        assert op in text


@pytest.mark.timeout(600)
def test_ulysses_by_ring_over_four_ranks(tmp_path):
    """Also compiled (Inductor regions holding the collectives)."""
    jobs = [("models", "flux", 0.0), ("models", "flux", CACHED["flux"], dict(compile=True)), ("models", "wan", CACHED["wan"])]
    ranks = _spawn(tmp_path, 4, dict(ulysses=2, ring=2), jobs)
    for key in ranks[0]:
        _check(ranks, key)
    assert ranks[0][("flux", CACHED["flux"], "compile")]["compiles"] > 0


@pytest.mark.timeout(600)
def test_token_counts_that_do_not_divide_are_padded(tmp_path):
    """Ring over 3 ranks: FLUX's 8 text and 16 image tokens, Wan's 128 video tokens do not divide
    by 3. Each rank pads its chunk; padded keys are dropped from attention, padded rows zeroed
    after each block (they add nothing to the diff), and the gather returns the exact tokens."""
    jobs = [("models", "flux", 0.0), ("models", "flux", CACHED["flux"]), ("models", "wan", CACHED["wan"]),
            ("zoo", "pixart", 0.0)]  # PixArt: 3 heads (no Ulysses 2), ring only
    ranks = _spawn(tmp_path, 3, dict(ring=3), jobs)
    for key in ranks[0]:
        _check(ranks, key)
    # 8 and 16 tokens over 3 ranks: chunks of 3 and 6, so the last rank holds padding.
    flux = ranks[2][("flux", 0.0)]
    assert ("hidden_states", 1, ("hidden_states",)) in flux["sharded"]
    assert flux["pads"] > 0, "the padded path (pad rows zeroed after each block) must have run"
