"""The cache algorithms as strategy objects: what differs between DBCache and DBPrune, in one place.

An ``Algorithm`` supplies the runtime context class the glue calls (which brings its stats type),
the rewrite pass list, and the planner flags. A config names its algorithm (``DBCacheConfig.algorithm``),
so nothing else dispatches on config types. A new algorithm is a new ``Algorithm`` registered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Type

from .config import DBCacheConfig
from .passes import DBCACHE_REWRITE, DBPRUNE_REWRITE
from .passes.manager import PassList
from .patterns import Plan, ScopeRequest
from .runtime import CacheContext, CacheStats, PruneContext
from .runtime.host import LOCAL, HostReads
from .runtime.state import GenerationState, StateSlot


@dataclass(frozen=True)
class Algorithm:
    name: str
    context_class: Type[CacheContext]
    rewrite: Tuple  # the rewrite stage's passes, in order
    defer_middle_only_ops: bool  # planner flag: may ops only the middle reads move into the body

    @property
    def stats_class(self) -> Type[CacheStats]:
        return self.context_class.stats_class

    def rewrite_passes(self) -> PassList:
        """A fresh, editable copy of this algorithm's rewrite stage."""
        return PassList("rewrite", self.rewrite)

    def scope_request(self, scope: Optional[str], config: DBCacheConfig) -> ScopeRequest:
        return ScopeRequest(scope, config.fn_blocks, config.bn_blocks, self.defer_middle_only_ops)

    def make_context(
        self,
        config: DBCacheConfig,
        plan: Plan,
        states: StateSlot,
        outputs_are_reused: bool,
        host: HostReads = LOCAL,
    ) -> CacheContext:
        return self.context_class(
            config,
            scope=plan.scope,
            leads=plan.leads,
            states=states,
            outputs_are_reused=outputs_are_reused,
            host=host,
            num_blocks=plan.num_blocks,
        )

    def stats(self, state: GenerationState, scope: Optional[str]) -> CacheStats:
        return self.context_class.collect_stats(state, scope)


DBCACHE = Algorithm("dbcache", CacheContext, DBCACHE_REWRITE, defer_middle_only_ops=True)
# DBPrune guards whole middle blocks, so it keeps every op of the Fn blocks in the head.
DBPRUNE = Algorithm("dbprune", PruneContext, DBPRUNE_REWRITE, defer_middle_only_ops=False)

ALGORITHMS: Dict[str, Algorithm] = {a.name: a for a in (DBCACHE, DBPRUNE)}


def algorithm_of(config: DBCacheConfig) -> Algorithm:
    return ALGORITHMS[config.algorithm]
