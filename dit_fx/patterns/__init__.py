"""Pattern analysis: find block regions in a captured graph, classify their I/O, plan the split.

Knows nothing of passes or runtime.
"""

from .plan import BlockInfo, MiddleStream, Plan, PlannerInput, ScopeRequest, build_plan, build_plans
from .regions import find_block_regions, parse_module_path

__all__ = ["BlockInfo", "MiddleStream", "Plan", "PlannerInput", "ScopeRequest", "build_plan", "build_plans", "find_block_regions", "parse_module_path"]
