"""dit_fx: training-free DiT acceleration as a torch.fx graph rewrite (DBCache)."""

from .api import disable, dump, generation, optimize, plan, plot_timeline, reset, summary
from .config import DBCacheConfig, DBPruneConfig, FoCaConfig, TaylorSeerConfig
from .matrix import supported_models
from .runtime import CacheStats
from .steps_mask import steps_mask

__version__ = "0.1.0"

__all__ = ["DBCacheConfig", "DBPruneConfig", "TaylorSeerConfig", "FoCaConfig", "steps_mask", "CacheStats", "optimize", "disable", "reset", "generation", "summary", "plan", "dump", "plot_timeline", "supported_models", "__version__"]
