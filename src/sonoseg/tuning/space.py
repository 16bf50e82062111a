"""Search spaces: ``parameters_tuning.yml`` entries keyed by the training parameter they set.

An entry is a distribution, ``{type: float, low: 1.0e-4, high: 1.0e-2, log: true}``,
``{type: int, low: 1, high: 4, step: 1}`` or ``{type: categorical, choices: [a, b]}``, keyed by a
path into the ``training`` parameters (``lr``, ``hdc.lambda_pix``). An entry may instead depend on a
categorical one, with one distribution per choice::

    hdc.perturbation_strength:
      depends_on: hdc.perturbation
      cases:
        uniform: {type: float, low: 0.1, high: 0.6}
        vat: {type: float, low: 0.5, high: 5.0, log: true}

A choice without a case leaves the parameter at its configured value. Each case is its own Optuna
parameter (``hdc.perturbation_strength|vat``), so the sampler never mixes an ε with a dropout p.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

__all__ = ["ParamSpec", "SearchSpace", "apply_params"]

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class ParamSpec:
    """One tuned parameter.

    Args:
        path: the training parameter it sets (``lr``, ``hdc.lambda_pix``).
        kind: float | int | categorical.
        low, high, log, step: the range of a float or int (``step`` null: continuous floats).
        choices: the values of a categorical.
        condition: ``(path, value)``: suggested only when that categorical took that value.
    """

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    condition: tuple[str, Any] | None = None

    @property
    def name(self) -> str:
        """The Optuna parameter name: the path, or ``path|value`` for a conditional case."""
        return self.path if self.condition is None else f"{self.path}|{self.condition[1]}"

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _number(where: str, key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{key}' must be a number, got {value!r}") from None


def _parse_distribution(where: str, path: str, entry: Any, condition: tuple[str, Any] | None) -> ParamSpec:
    if not isinstance(entry, Mapping) or entry.get("type") not in KINDS:
        raise ValueError(f"{where}: expected a mapping with type: {' | '.join(KINDS)}, got {entry!r}")
    allowed = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
    unknown = set(entry) - allowed[entry["type"]] - {"type"}
    if unknown:
        allowed_keys = sorted(allowed[entry["type"]])
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} for a {entry['type']} (allowed: {allowed_keys})")
    if entry["type"] == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}: a categorical needs a non-empty list of choices")
        return ParamSpec(path, "categorical", choices=tuple(choices), condition=condition)
    if "low" not in entry or "high" not in entry:
        raise ValueError(f"{where}: a {entry['type']} needs low and high")
    low, high = _number(where, "low", entry["low"]), _number(where, "high", entry["high"])
    step = None if entry.get("step") is None else _number(where, "step", entry["step"])
    log = bool(entry.get("log", False))
    if not low < high:
        raise ValueError(f"{where}: low ({low}) must be below high ({high})")
    if log and (low <= 0 or step is not None):
        raise ValueError(f"{where}: a log range needs low > 0 and no step")
    if entry["type"] == "int" and not (low.is_integer() and high.is_integer()):
        raise ValueError(f"{where}: an int range needs integer low and high")
    return ParamSpec(path, entry["type"], low=low, high=high, log=log, step=step, condition=condition)


class SearchSpace:
    """The parsed search space of one method; ``suggest`` draws a trial's training values."""

    def __init__(self, specs: list[ParamSpec]) -> None:
        self.specs = specs

    @classmethod
    def from_config(cls, entries: Mapping[str, Any], where: str = "search space") -> SearchSpace:
        """Parse the yaml entries (see the module docstring); errors name ``where`` and the entry."""
        if not isinstance(entries, Mapping) or not entries:
            raise ValueError(f"{where} is empty: give at least one parameter to tune")
        specs: list[ParamSpec] = []
        for path, entry in entries.items():
            at = f"{where}.{path}"
            if isinstance(entry, Mapping) and "depends_on" in entry:
                parent = next((s for s in specs if s.path == entry["depends_on"] and s.kind == "categorical"), None)
                if parent is None:
                    raise ValueError(f"{at}: depends_on '{entry['depends_on']}' must name a categorical entry listed above it")
                cases = entry.get("cases")
                if set(entry) != {"depends_on", "cases"} or not isinstance(cases, Mapping) or not cases:
                    raise ValueError(f"{at}: a conditional entry has exactly depends_on and a non-empty cases mapping")
                for value, case in cases.items():
                    if value not in parent.choices:
                        raise ValueError(f"{at}: case '{value}' is not a choice of {parent.path} {list(parent.choices)}")
                    specs.append(_parse_distribution(f"{at}.cases.{value}", path, case, (parent.path, value)))
            else:
                specs.append(_parse_distribution(at, path, entry, None))
        return cls(specs)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(spec.path for spec in self.specs))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Training values (path -> value) for this trial, conditional entries after their parent."""
        values: dict[str, Any] = {}
        for spec in self.specs:
            if spec.condition is None or values.get(spec.condition[0]) == spec.condition[1]:
                values[spec.path] = spec.suggest(trial)
        return values

    def training_values(self, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
        """A finished trial's Optuna params translated to training paths."""
        by_name = {spec.name: spec.path for spec in self.specs}
        return {by_name.get(name, name): value for name, value in optuna_params.items()}

    def check_paths(self, training: Mapping[str, Any], method: str, where: str = "search space") -> None:
        """Every path must be a trainer setting or a setting of ``method`` present in ``training``."""
        for path in self.paths:
            head, _, rest = path.partition(".")
            if rest and head != method:
                raise ValueError(f"{where}.{path}: tunes method '{head}' but the study tunes '{method}'")
            try:
                _lookup(training, path)
            except KeyError:
                raise ValueError(f"{where}.{path}: there is no training.{path} parameter to set") from None


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def apply_params(training: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the ``training`` parameters with each dotted path set; a path that does not
    exist raises ``KeyError`` (a typo must not pass silently as a new, ignored setting)."""
    result = copy.deepcopy(dict(training))
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = result
        for part in parents:
            node = node.get(part)
            if not isinstance(node, dict):
                raise KeyError(f"training.{path}: no such parameter")
        if leaf not in node:
            raise KeyError(f"training.{path}: no such parameter")
        node[leaf] = value
    return result
