"""dit_fx: training-free DiT acceleration as a torch.fx graph rewrite (DBCache)."""

from .api import disable, dump, generation, optimize, plan, plot_timeline, reset, summary
from .calibrate import Calibration, calibrate
from .config import DBCacheConfig, DBPruneConfig, FoCaConfig, TaylorSeerConfig
from .inspection import Inspection, inspect
from .options import CompileOptions
from .parallel import ParallelConfig
from .quantize import QuantizeConfig, quantize  # the function shadows the submodule name: import from dit_fx.quantize
from .requests import Request, new_request, request
from .runtime import CacheStats, PruneStats
from .steps_mask import steps_mask
from .tools.matrix import supported_models

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "calibrate",
    "CacheStats",
    "CompileOptions",
    "DBCacheConfig",
    "DBPruneConfig",
    "FoCaConfig",
    "Inspection",
    "ParallelConfig",
    "PruneStats",
    "QuantizeConfig",
    "Request",
    "TaylorSeerConfig",
    "__version__",
    "disable",
    "dump",
    "generation",
    "inspect",
    "optimize",
    "plan",
    "new_request",
    "plot_timeline",
    "quantize",
    "request",
    "reset",
    "steps_mask",
    "summary",
    "supported_models",
]
