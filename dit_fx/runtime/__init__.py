"""State the rewritten graph calls into on every step. Imports nothing from the compile side."""

from .context import CacheContext, CacheStats, relative_l1
from .glue_ops import (CALL_TIMESTEP, call_timestep, dbcache_decide, dbcache_middle, dbcache_outputs, dbcache_read_timestep,
                       dbprune_begin, dbprune_block)
from .host import LOCAL, HostReads
from .prune import PruneContext, PruneStats
from .state import GenerationState, StateSlot
from .tracker import StepTracker

__all__ = [
    "CacheContext",
    "CacheStats",
    "GenerationState",
    "HostReads",
    "LOCAL",
    "PruneContext",
    "PruneStats",
    "StateSlot",
    "StepTracker",
    "relative_l1",
    "CALL_TIMESTEP",
    "call_timestep",
    "dbcache_decide",
    "dbcache_middle",
    "dbcache_outputs",
    "dbcache_read_timestep",
    "dbprune_begin",
    "dbprune_block",
]
