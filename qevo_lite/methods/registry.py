"""The one list of rounding methods: each is a frozen config type plus a function, registered once.

A method is a function ``run(problem, config) -> (state, record)``: the codes it chose on
``problem.rtn_state``'s grid (a :class:`~qevo_lite.quant.grid.QuantState`) and anything it wants to keep about
the run (the ES: its stages' logs; None for most). Everything that lists methods (``qv.quantize``, the
experiment cells and their tables, JSON and figures) looks them up here by name or by config type::

    register("round_down", RoundDownConfig, round_down, label="Round down")
    qv.quantize(model, data, method="round_down")          # or method=RoundDownConfig(...)

A config is a frozen dataclass. Optional hooks on it: ``for_quantize(samples, budget, adaround_steps)``
(classmethod: the config ``qv.quantize``'s size arguments ask for; default: the config's defaults) and
``describe(samples_word)`` (a phrase for the tables' notes).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, Callable

from ..quant.grid import QuantState
from ..rounding.problem import RoundingProblem


@dataclass(frozen=True)
class Method:
    """A registered method: its ``name`` (in JSON, profiles and ``qv.quantize``), the ``config_type``, the
    function ``run(problem, config) -> (state, record)``, the ``label`` tables and figures show, its ``kind``
    (``rtn``, ``peer`` or ``es``: the figures' colour and which methods the experiments run beside the ES) and
    whether its result depends on the seed (``seeded``: a deterministic method runs once for every seed)."""

    name: str
    config_type: type
    run: Callable[[RoundingProblem, Any], tuple]
    label: str
    kind: str = "peer"
    seeded: bool = True


@dataclass
class MethodResult:
    """One method's run: which method and settings, the codes it chose (``state``), its wall time from the
    start state in seconds (layer captures and setup included) and its own ``record`` (or None)."""

    method: str
    label: str
    config: Any
    state: QuantState
    seconds: float
    record: Any = None


_METHODS: dict[str, Method] = {}
KINDS = ("rtn", "peer", "es")


def register(name: str, config_type: type, run: Callable, label: str, kind: str = "peer",
             seeded: bool = True) -> Method:
    """Add a method (see the module docstring). Raises ValueError for a name or config type already taken,
    a config type that is not a frozen dataclass, or an unknown ``kind``."""
    if name in _METHODS or any(m.config_type is config_type for m in _METHODS.values()):
        raise ValueError(f"A method named {name!r} or with config {config_type.__name__} is already registered.")
    if not (is_dataclass(config_type) and config_type.__dataclass_params__.frozen):
        raise ValueError(f"{config_type.__name__} must be a frozen dataclass (configs are compared and hashed).")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    _METHODS[name] = Method(name, config_type, run, label, kind, seeded)
    return _METHODS[name]


def unregister(name: str) -> None:
    """Remove a method (for tests and notebooks that register a toy one)."""
    _METHODS.pop(name, None)


def method_names(kind: str | None = None) -> tuple[str, ...]:
    """The registered names (of one ``kind``), in registration order."""
    return tuple(n for n, m in _METHODS.items() if kind is None or m.kind == kind)


def get_method(name_or_config) -> Method:
    """The :class:`Method` of a registered name or of a config instance; ValueError naming the choices."""
    if isinstance(name_or_config, str):
        if name_or_config not in _METHODS:
            raise ValueError(f"Unknown method {name_or_config!r}; choose one of {method_names()}.")
        return _METHODS[name_or_config]
    for m in _METHODS.values():
        if type(name_or_config) is m.config_type:
            return m
    raise ValueError(f"{type(name_or_config).__name__} is not the config of a registered method "
                     f"({method_names()}); register it with qevo_lite.methods.register.")


def label_of(name: str) -> str:
    """The label tables and figures show for method ``name`` (the name itself when it is not registered)."""
    return _METHODS[name].label if name in _METHODS else name


def default_config(name: str, samples: int = 256, budget: int = 64, adaround_steps: int = 1000):
    """Method ``name``'s config for ``qv.quantize``'s size arguments (its ``for_quantize``, else its defaults)."""
    config_type = get_method(name).config_type
    make = getattr(config_type, "for_quantize", None)
    return make(samples=samples, budget=budget, adaround_steps=adaround_steps) if make else config_type()


def as_config(name_or_config):
    """A config instance: a registered name becomes that method's default config."""
    return get_method(name_or_config).config_type() if isinstance(name_or_config, str) else name_or_config


def config_dict(config) -> dict:
    """``{"method": name, **fields}``: a config as JSON-ready data (see :func:`config_from_dict`)."""
    return {"method": get_method(config).name, **asdict(config)}


def config_from_dict(d: dict):
    """The config :func:`config_dict` wrote (lists become tuples)."""
    m = get_method(d["method"])
    known = {f.name for f in fields(m.config_type)}
    return m.config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


def describe(config, samples: str = "images") -> str:
    """A phrase naming the method and its settings (the config's ``describe``, else its label and fields)."""
    if hasattr(config, "describe"):
        return config.describe(samples)
    items = ", ".join(f"{k} {v}" for k, v in asdict(config).items())
    return get_method(config).label + (f" ({items})" if items else "")


def choose_codes(config, problem: RoundingProblem) -> MethodResult:
    """Run the method of ``config`` (a config instance or a registered name) on ``problem``, timed from the
    start state (everything the method computes counts)."""
    config = as_config(config)
    method = get_method(config)
    t0 = time.perf_counter()
    state, record = method.run(problem, config)
    return MethodResult(method.name, method.label, config, state, time.perf_counter() - t0, record)
