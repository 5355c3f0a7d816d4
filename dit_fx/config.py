"""User-facing configuration: what to cache and when.

Every field is validated at construction; a bad value raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Sequence, Tuple, Union


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"DBCacheConfig.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"DBCacheConfig.{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"DBCacheConfig.{name} must be a number, got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise ValueError(f"DBCacheConfig.{name} must be a number, got nan (every comparison with nan is False)")


CACHE_TYPES = ("residual", "hidden_states", "output")


def _check_cache_type(owner: str, value: Any) -> None:
    if value not in CACHE_TYPES:
        raise ValueError(f"{owner}.cache_type must be one of {CACHE_TYPES}, got {value!r}")


@dataclass(frozen=True)
class TaylorSeerConfig:
    """Forecast the middle's contribution on cached steps with a Taylor series instead of reusing it.

    On computed steps a ladder of finite differences of the cached value is updated (window =
    steps since the last computed step); a cached step predicts ``sum_i d_i * elapsed^i / i!``.
    Trade-off: higher ``order`` follows curved trajectories better but amplifies noise; order 1-2
    is the useful range. ``cache_type="hidden_states"`` forecasts the middle's output itself
    instead of its residual; ``cache_type="output"`` forecasts what the transformer returns (its
    prediction, smooth in time, like diffusers' TaylorSeer "lite"): a cached step reuses the
    middle's residual as usual, runs the output layers, and returns the forecast instead. Works
    with ``bn_blocks=0`` (the reference's recommendation).
    """

    order: int = 1
    cache_type: str = "residual"

    def __post_init__(self) -> None:
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"TaylorSeerConfig.order must be an int >= 1, got {self.order!r}")
        _check_cache_type("TaylorSeerConfig", self.cache_type)


@dataclass(frozen=True)
class FoCaConfig:
    """Forecast-then-calibrate (FoCa, arXiv 2508.16211): a Heun (trapezoid) step from the last
    computed value using the average of the slope between the last two computed steps and the
    slope of the last step (computed or forecast), damped toward the last computed value beyond
    3 steps. No order to tune; steadier than TaylorSeer over long cached runs."""

    cache_type: str = "residual"

    def __post_init__(self) -> None:
        _check_cache_type("FoCaConfig", self.cache_type)


CALIBRATORS = {"taylorseer": TaylorSeerConfig, "foca": FoCaConfig}


def _calibrator_from_dict(values: Mapping[str, Any]):
    values = dict(values)
    kind = values.pop("type", None)
    if kind not in CALIBRATORS:
        raise ValueError(f"DBCacheConfig.calibrator['type'] must be one of {sorted(CALIBRATORS)}, got {kind!r}")
    cls = CALIBRATORS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


STEPS_POLICIES = ("dynamic", "static")
REFRESH_POLICIES = ("once", "repeat")
STEP_SOURCES = ("timestep", "calls")  # DBCacheConfig.step_source


@dataclass(frozen=True)
class DBCacheConfig:
    """Dual Block Cache: run the first ``fn_blocks`` and last ``bn_blocks`` blocks every step; skip
    the blocks between them when the first blocks' residual barely changed since the last computed step.

    Trade-off: a larger ``residual_diff_threshold`` (or smaller ``fn_blocks``) caches more steps and
    runs faster but drifts further from the uncached result; ``bn_blocks > 0`` corrects part of that
    drift at the cost of running those blocks on every step.

    fn_blocks: blocks always computed at the front; their residual is the change detector (>= 1).
        0 is allowed with ``steps_computation_policy="static"`` and a mask (the mask decides, so
        no detector is needed): cached steps then run no block at all, reusing (or, with a
        calibrator, forecasting) the whole block stack's residual, like diffusers' TaylorSeer
        "lite" (cache-dit refuses Fn=0). On the shipped trained model (``tests/test_quality.py``)
        F0B0 + FoCa beat TaylorSeer lite on its own schedule.
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
    calibrator: None (reuse the stored residual), ``TaylorSeerConfig`` or ``FoCaConfig``.
    steps_computation_mask: per-step list, 1 = must compute, 0 = may cache (``dit_fx.steps_mask``
        builds one). Steps past its end use the threshold decision. Must have
        ``num_inference_steps`` entries when that is set.
    steps_computation_policy: "dynamic" (0 steps take the usual decision) or "static" (0 steps
        cache unconditionally once a residual is stored: a fixed schedule, no diff computed).
    force_refresh_step_hint / force_refresh_step_policy: start a new cache context at step K
        ("once") or every K steps ("repeat"): buffers, warmup and stats start over, as for a
        multi-stage pipeline whose conditioning changes at step K.
    step_source: how a call is placed (step, CFG branch, generation). ``"timestep"`` (default):
        from the timestep each call receives, read on the host before the decision
        (``runtime/tracker.py``): no hints needed, and a loop interrupted and restarted is found.
        On CUDA that read waits for the previous step's GPU work, so the host cannot queue ahead
        of the GPU: on the shipped model at batch 200, eager, the GPU idled 67 ms of a 0.785 s
        generation (``benchmarks/results/profile_forecast_h200.txt``). ``"calls"``: no read; every
        call is a step (``enable_separate_cfg``, required here: False, one call per step; True, the
        calls of a step by the pipeline's branch names, else by call parity), and a generation
        starts at ``dit_fx.reset`` / ``dit_fx.generation`` / a pipeline call, after
        ``num_inference_steps`` steps (required here) and when the hidden stream's shape changes,
        as diffusers' and cache-dit's caches count calls. A bare loop stopped early and started
        again without ``dit_fx.reset`` is counted on as the old generation: its timestep, copied
        without waiting and checked once landed, gives one ``RuntimeWarning`` saying so (placement
        stays counted, so it is the same in every run and on every rank). Use it where every
        generation is marked.
    """

    algorithm: ClassVar[str] = "dbcache"  # the strategy in dit_fx.algorithms

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
    calibrator: Optional[Union[TaylorSeerConfig, FoCaConfig]] = None
    steps_computation_mask: Optional[Tuple[int, ...]] = None
    steps_computation_policy: str = "dynamic"
    force_refresh_step_hint: Optional[int] = None
    force_refresh_step_policy: str = "once"
    step_source: str = "timestep"

    def __post_init__(self) -> None:
        _check_int("fn_blocks", self.fn_blocks, 0)
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
        if self.calibrator is not None and not isinstance(self.calibrator, (TaylorSeerConfig, FoCaConfig)):
            raise ValueError(
                f"DBCacheConfig.calibrator must be None, TaylorSeerConfig or FoCaConfig, got {self.calibrator!r}"
            )
        self._check_steps_mask()
        if self.fn_blocks == 0 and (self.steps_computation_policy != "static" or self.steps_computation_mask is None
                                    or self.algorithm != "dbcache"):
            raise ValueError("DBCacheConfig.fn_blocks must be >= 1 unless steps_computation_policy='static' with a "
                             "steps_computation_mask (Fn=0 has no residual to decide on: the mask decides; DBCache only)")
        if self.step_source not in STEP_SOURCES:
            raise ValueError(f"DBCacheConfig.step_source must be one of {STEP_SOURCES}, got {self.step_source!r}")
        if self.step_source == "calls" and (self.num_inference_steps is None or self.enable_separate_cfg is None):
            raise ValueError("DBCacheConfig.step_source='calls' needs num_inference_steps (counted calls restart after "
                             "that many steps when a generation is not marked) and enable_separate_cfg True or False "
                             "(counting cannot tell a second CFG call of a step from the next step)")
        if self.force_refresh_step_hint is not None:
            _check_int("force_refresh_step_hint", self.force_refresh_step_hint, 1)
        if self.force_refresh_step_policy not in REFRESH_POLICIES:
            raise ValueError(
                f"DBCacheConfig.force_refresh_step_policy must be one of {REFRESH_POLICIES}, got {self.force_refresh_step_policy!r}"
            )

    def _check_steps_mask(self) -> None:
        if self.steps_computation_policy not in STEPS_POLICIES:
            raise ValueError(
                f"DBCacheConfig.steps_computation_policy must be one of {STEPS_POLICIES}, got {self.steps_computation_policy!r}"
            )
        mask = self.steps_computation_mask
        if mask is None:
            return
        if isinstance(mask, (str, bytes)) or not isinstance(mask, Sequence) or not mask:
            raise ValueError(f"DBCacheConfig.steps_computation_mask must be a non-empty list of 0/1, got {mask!r}")
        if any(isinstance(v, bool) or v not in (0, 1) for v in mask):
            raise ValueError(f"DBCacheConfig.steps_computation_mask must hold only 0 and 1, got {list(mask)}")
        n = self.num_inference_steps
        if n is not None and len(mask) != n:
            raise ValueError(
                f"DBCacheConfig.steps_computation_mask has {len(mask)} entries but num_inference_steps is {n}"
            )
        object.__setattr__(self, "steps_computation_mask", tuple(int(v) for v in mask))  # hashable, frozen
        warm = set(range(0, self.max_warmup_steps, self.warmup_interval))
        cancelled = [step for step, v in enumerate(self.steps_computation_mask) if v == 0 and step in warm]
        if cancelled:
            warnings.warn(
                f"DBCacheConfig.steps_computation_mask allows caching at steps {cancelled}, but they are "
                f"warmup steps (max_warmup_steps={self.max_warmup_steps}), which always compute: pass "
                f"max_warmup_steps=0 (or a smaller value) to let the mask decide them",
                UserWarning,
                stacklevel=4,
            )

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
        values = dict(values)
        if isinstance(values.get("calibrator"), Mapping):  # {"type": "taylorseer", "order": 2}
            values["calibrator"] = _calibrator_from_dict(values["calibrator"])
        return cls(**values)


@dataclass(frozen=True)
class DBPruneConfig(DBCacheConfig):
    """Dynamic Block Prune: every middle block gets its own guard instead of one decision for the
    whole middle. A block whose input barely changed (relative L1 against its input at its last
    computed step) is pruned: its output is rebuilt as input + that block's stored residual.

    Trade-off: finer than DBCache (a step can run half its blocks), so it keeps more quality at
    the same speed-up on models whose blocks settle at different times; it pays one diff (one
    host sync) per middle block and step, so on launch-bound models DBCache is faster.

    fn_blocks / bn_blocks: first / last blocks never pruned; the rest of DBCacheConfig's gates
        (warmup, steps mask, max cached steps, ...) apply per block, a step with any pruned block
        counting as a pruned step.
    enable_dynamic_prune_threshold: raise the threshold of a block to the mean of the first (up to
        5) positive diffs of earlier blocks in the same step x ``dynamic_prune_threshold_relax_ratio``,
        when that is above the base threshold and below ``max_dynamic_prune_threshold`` (None:
        2x the base threshold).
    non_prune_block_ids: block indices (over all blocks in execution order) never pruned.
    """

    algorithm: ClassVar[str] = "dbprune"

    enable_dynamic_prune_threshold: bool = False
    max_dynamic_prune_threshold: Optional[float] = None
    dynamic_prune_threshold_relax_ratio: float = 1.25
    non_prune_block_ids: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.enable_dynamic_prune_threshold, bool):
            raise ValueError(f"DBPruneConfig.enable_dynamic_prune_threshold must be a bool, got {self.enable_dynamic_prune_threshold!r}")
        if self.max_dynamic_prune_threshold is not None:
            _check_number("max_dynamic_prune_threshold", self.max_dynamic_prune_threshold)
        _check_number("dynamic_prune_threshold_relax_ratio", self.dynamic_prune_threshold_relax_ratio)
        if self.dynamic_prune_threshold_relax_ratio <= 0:
            raise ValueError("DBPruneConfig.dynamic_prune_threshold_relax_ratio must be > 0")
        ids = self.non_prune_block_ids
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or any(
            isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids
        ):
            raise ValueError(f"DBPruneConfig.non_prune_block_ids must be a list of block indices >= 0, got {ids!r}")
        object.__setattr__(self, "non_prune_block_ids", tuple(sorted(set(ids))))
        if self.calibrator is not None:
            raise ValueError("DBPruneConfig.calibrator is not supported: pruned blocks reuse their own residuals")

    def threshold_for(self, earlier_diffs: Sequence[float]) -> float:
        """The threshold of the next block in a step, given the diffs of earlier blocks."""
        base = self.residual_diff_threshold
        if not self.enable_dynamic_prune_threshold:
            return base
        positive = [d for d in earlier_diffs[:5] if d > 0.0]
        if not positive:
            return base
        relaxed = sum(positive) / len(positive) * self.dynamic_prune_threshold_relax_ratio
        ceiling = 2 * base if self.max_dynamic_prune_threshold is None else self.max_dynamic_prune_threshold
        return relaxed if base < relaxed < ceiling else base


# Fields that say where a call sits (step, branch, generation). One tracker serves all block
# lists of a transformer, so these must agree across per-list configs.
PLACEMENT_FIELDS = (
    "num_inference_steps",
    "enable_separate_cfg",
    "cfg_compute_first",
    "force_refresh_step_hint",
    "force_refresh_step_policy",
    "step_source",
)


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
