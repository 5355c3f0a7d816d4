"""User-facing configuration: what to cache and when.

Every field is validated at construction; a bad value raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"DBCacheConfig.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"DBCacheConfig.{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"DBCacheConfig.{name} must be a number, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class DBCacheConfig:
    """Dual Block Cache: run the first ``fn_blocks`` and last ``bn_blocks`` blocks every step; skip
    the blocks between them when the first blocks' residual barely changed since the last computed step.

    Trade-off: a larger ``residual_diff_threshold`` (or smaller ``fn_blocks``) caches more steps and
    runs faster but drifts further from the uncached result; ``bn_blocks > 0`` corrects part of that
    drift at the cost of running those blocks on every step.

    fn_blocks: blocks always computed at the front; their residual is the change detector (>= 1).
    bn_blocks: blocks always computed at the back (>= 0).
    residual_diff_threshold: cache a step iff mean|ref - cur| / mean|ref| < this; <= 0 never caches.
    max_warmup_steps / warmup_interval: steps in ``range(0, max_warmup_steps, warmup_interval)``
        always compute.
    max_cached_steps: at most this many cached steps per generation (-1: unlimited).
    max_continuous_cached_steps: at most this many cached steps in a row (-1: unlimited). Plain
        definition: after N consecutive cached steps the next step computes. (cache-dit counts
        this differently; we do not copy its counter.)
    max_accumulated_residual_diff_threshold: once the sum of recorded diffs in this generation
        reaches it, every later step computes (None: off).
    num_inference_steps: if set, step N+1 starts a new generation (buffers and stats cleared).
        Without it, generations are found from the timesteps (see ``dit_fx.runtime.tracker``).
    enable_separate_cfg: give each CFG branch (the calls of one step with the same timestep) its
        own reference, residuals and stats. None: detect (two calls with one timestep); True:
        force (by call parity when the model has no timestep input); False: every call is a step.
    cfg_compute_first: the first call of a step is the CFG (uncond) one (default: the second).
    cfg_diff_compute_separate: False reuses the non-CFG call's diff of the same step for the CFG
        call (same decision, one diff less).
    """

    fn_blocks: int = 8
    bn_blocks: int = 0
    residual_diff_threshold: float = 0.08
    max_warmup_steps: int = 8
    warmup_interval: int = 1
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    max_accumulated_residual_diff_threshold: Optional[float] = None
    num_inference_steps: Optional[int] = None
    enable_separate_cfg: Optional[bool] = None
    cfg_compute_first: bool = False
    cfg_diff_compute_separate: bool = True

    def __post_init__(self) -> None:
        _check_int("fn_blocks", self.fn_blocks, 1)
        _check_int("bn_blocks", self.bn_blocks, 0)
        _check_number("residual_diff_threshold", self.residual_diff_threshold)
        _check_int("max_warmup_steps", self.max_warmup_steps, 0)
        _check_int("warmup_interval", self.warmup_interval, 1)
        _check_int("max_cached_steps", self.max_cached_steps, -1)
        _check_int("max_continuous_cached_steps", self.max_continuous_cached_steps, -1)
        if self.max_accumulated_residual_diff_threshold is not None:
            _check_number("max_accumulated_residual_diff_threshold", self.max_accumulated_residual_diff_threshold)
            if self.max_accumulated_residual_diff_threshold <= 0:
                raise ValueError("DBCacheConfig.max_accumulated_residual_diff_threshold must be > 0 or None")
        if self.num_inference_steps is not None:
            _check_int("num_inference_steps", self.num_inference_steps, 1)
        if self.enable_separate_cfg is not None and not isinstance(self.enable_separate_cfg, bool):
            raise ValueError(f"DBCacheConfig.enable_separate_cfg must be None or a bool, got {self.enable_separate_cfg!r}")
        for name in ("cfg_compute_first", "cfg_diff_compute_separate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DBCacheConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def check_block_count(self, num_blocks: int) -> None:
        """Raise if this config cannot be applied to a model with ``num_blocks`` blocks."""
        if self.fn_blocks + self.bn_blocks >= num_blocks:
            raise ValueError(
                f"DBCacheConfig.fn_blocks + bn_blocks ({self.fn_blocks} + {self.bn_blocks}) must be < the "
                f"number of transformer blocks ({num_blocks}) so at least one block can be cached"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DBCacheConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DBCacheConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


# Fields that say where a call sits (step, branch, generation). One tracker serves all block
# lists of a transformer, so these must agree across per-list configs.
PLACEMENT_FIELDS = ("num_inference_steps", "enable_separate_cfg", "cfg_compute_first")


@dataclass(frozen=True)
class BlockListConfigs:
    """One cache context per named block list, each with its own Fn/Bn, threshold and stats
    (cache-dit's per-list contexts, its ParamsModifier). Block lists not named run every step.

    Trade-off: a plain ``DBCacheConfig`` joins all lists into one stack, so one decision skips
    the most blocks; separate contexts let each list cache on its own evidence (HunyuanVideo's
    double and single stacks drift differently), at the cost of one Fn probe and one host sync
    per list and step. Build it from a dict: ``{"transformer_blocks": cfg_a, ...}``.
    """

    lists: Tuple[Tuple[str, DBCacheConfig], ...]

    def __post_init__(self) -> None:
        if not self.lists:
            raise ValueError("block-list configs: name at least one block list")
        first = self.lists[0][1]
        for name, cfg in self.lists:
            if not isinstance(name, str) or not name:
                raise ValueError(f"block-list configs: list names must be non-empty strings, got {name!r}")
            if not isinstance(cfg, DBCacheConfig):
                raise ValueError(f"block-list configs: {name!r} must map to a DBCacheConfig, got {type(cfg).__name__}")
            for f in PLACEMENT_FIELDS:
                if getattr(cfg, f) != getattr(first, f):
                    raise ValueError(
                        f"DBCacheConfig.{f} must be the same for every block list (one step counter per "
                        f"transformer): {self.lists[0][0]!r} has {getattr(first, f)!r}, {name!r} has {getattr(cfg, f)!r}"
                    )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "BlockListConfigs":
        return cls(tuple((name, coerce_config(cfg, per_list=False)) for name, cfg in values.items()))

    def config_of(self, name: str) -> DBCacheConfig:
        return dict(self.lists)[name]

    @property
    def placement(self) -> DBCacheConfig:
        return self.lists[0][1]


AnyConfig = Union[DBCacheConfig, BlockListConfigs]


def _is_per_list(values: Mapping[str, Any]) -> bool:
    """``{"transformer_blocks": cfg, ...}`` (configs by list name), not ``{"fn_blocks": 1, ...}``."""
    nested = [isinstance(v, (DBCacheConfig, Mapping)) for v in values.values()]
    if values and all(nested):
        return True
    if any(nested):
        raise ValueError(
            "a config dict is either DBCacheConfig fields ({'fn_blocks': 1, ...}) or configs by block-list "
            f"name ({{'transformer_blocks': DBCacheConfig(...), ...}}), not a mix: {sorted(values)}"
        )
    return False


def coerce_config(config: "DBCacheConfig | BlockListConfigs | Mapping[str, Any] | None", per_list: bool = True) -> AnyConfig:
    """A ``DBCacheConfig`` (joined block lists) or a ``BlockListConfigs`` (one context per list)."""
    if config is None:
        return DBCacheConfig()
    if isinstance(config, DBCacheConfig) or (per_list and isinstance(config, BlockListConfigs)):
        return config
    if isinstance(config, Mapping):
        if per_list and _is_per_list(config):
            return BlockListConfigs.from_mapping(config)
        return DBCacheConfig.from_dict(config)
    raise ValueError(f"config must be a DBCacheConfig, a dict or None, got {type(config).__name__}")
