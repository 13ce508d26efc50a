"""Rules of one's own: checked, loaded and evaluated like the catalogue's row rules.

A user rule is a :class:`~ecom_stream.contract.rules.Rule` with a ``fails`` mask over the
typed view; unless it brings its own GX ``expectations`` it gets one part, an
``ExpectColumnValuesToBeInSet([True])`` over a GX-frame column named after the rule that holds
the negated mask, so Great Expectations decides it in the same run as the built-in rules.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecom_stream.contract.rules import FILE_LEVEL, FRAME_KINDS, RULES, Part, Rule
from ecom_stream.contract.schema import ENTITIES
from ecom_stream.errors import ConfigError, ValidationSetupError

__all__ = ["check_extra_rules", "evaluate", "load_rules", "with_gx_part"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_POLICIES = ("quarantine-batch", "drop-row", "warn")


@dataclass(frozen=True)
class _MaskPasses:
    """Builds the expectation that the GX-frame column ``column`` (a negated mask) is all True;
    a value, not a closure, so the rule checked twice equals itself (one GX suite for both)."""

    column: str

    def __call__(self, E: Any) -> Any:
        return E.ExpectColumnValuesToBeInSet(column=self.column, value_set=[True])


def with_gx_part(rule: Rule) -> Rule:
    """``rule``, given the GX part that checks its mask when it has no expectation of its own."""
    if rule.expectations or rule.fails is None:
        return rule
    part = Part(rule.name, _MaskPasses(rule.name), ((rule.name, rule.name, "passes"),))
    return dataclasses.replace(rule, expectations=(part,))


def check_extra_rules(rules: Iterable[Any]) -> tuple[Rule, ...]:
    """The extra rules as a tuple, each with its GX part; ConfigError naming a faulty one."""
    out: list[Rule] = []
    seen = {r.name for r in RULES}
    tags = {p.tag for r in RULES for p in r.expectations}
    for rule in rules:
        if not isinstance(rule, Rule):
            raise ConfigError(f"extra rule {rule!r} is not an ecom_stream.Rule")
        where = f"extra rule {rule.name!r}"
        if not _NAME.fullmatch(rule.name) or rule.name.endswith(FILE_LEVEL):
            raise ConfigError(
                f"{where}: a name is lower-case letters, digits and _ (it is the policy key "
                f"ECOM_POLICY_<NAME>) and does not end in {' or '.join(FILE_LEVEL)}"
            )
        if rule.name in seen:
            raise ConfigError(f"{where}: the name is already taken by another rule")
        if rule.entity not in ENTITIES:
            raise ConfigError(f"{where}: entity must be one of {', '.join(ENTITIES)}")
        if rule.policy not in _POLICIES:
            raise ConfigError(f"{where}: policy must be one of {', '.join(_POLICIES)}")
        fields = [f for _, f, _, _ in string.Formatter().parse(rule.what) if f is not None]
        if any(f != "settings" and not f.startswith("settings.") for f in fields):
            raise ConfigError(f"{where}: what may only format {{settings.<name>}} (use {{{{ }}}})")
        if rule.fails is None and not rule.expectations:
            raise ConfigError(f"{where}: give it a fails mask or GX expectations (or both)")
        rule = with_gx_part(rule)
        for p in rule.expectations:
            if p.tag in tags or any(k not in FRAME_KINDS for _, _, k in p.columns):
                raise ConfigError(f"{where}: part {p.tag!r} reuses a tag or has an unknown kind")
            tags.add(p.tag)
        seen.add(rule.name)
        out.append(rule)
    return tuple(out)


def load_rules(spec: str) -> tuple[Rule, ...]:
    """The rules named by ``"package.module:NAME"`` (a sequence of Rule), for ECOM_EXTRA_RULES."""
    module, _, attr = spec.strip().partition(":")
    try:
        value = getattr(importlib.import_module(module), attr or "RULES")
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"ECOM_EXTRA_RULES={spec!r}: cannot load the rules ({exc})") from None
    return tuple(value)


def evaluate(rule: Rule, typed: Any) -> np.ndarray:
    """The rule's mask of failing rows over ``typed``, as a bool array (NA counts as passing).

    A mask that raises or has the wrong length is a setup error, never bad data.
    """
    assert rule.fails is not None
    try:
        result = rule.fails(typed)
        if hasattr(result, "to_numpy"):
            result = result.to_numpy(dtype=bool, na_value=False)
        mask = np.asarray(result, dtype=bool)
    except Exception as exc:
        raise ValidationSetupError(f"rule {rule.name}: its fails mask raised {exc!r}") from exc
    if mask.shape != (len(typed),):
        raise ValidationSetupError(
            f"rule {rule.name}: its fails mask has shape {mask.shape} for {len(typed)} rows"
        )
    return mask
