"""How a GitHub issue's labels state a field of the store (priority or type), and the labels that
write one: see the mappings in ``github``'s docstring."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from .base import SourceError

__all__ = ["LabelMap", "priority_labels", "type_labels"]

_PRIORITY_LABEL = re.compile(r"^(?:priority|prio)\s*[:/_ -]?\s*(?P<word>\w+)$|^p(?P<level>[0-3])$")
_PRIORITY_WORDS = {"critical": "critical", "urgent": "critical", "high": "high",
                   "medium": "medium", "normal": "medium", "low": "low"}
_TYPE_LABEL = re.compile(r"^(?:type|kind)\s*[:/]\s*(?P<word>.+)$")
_TYPE_WORDS = {"bug": "bug", "defect": "bug", "enhancement": "feature", "feature": "feature",
               "epic": "epic", "story": "story", "user story": "story", "task": "task",
               "chore": "task"}


def _normal(label: str) -> str:
    return " ".join(label.lower().split())


def _priority_of(name: str) -> str | None:
    if name in ("critical", "urgent"):
        return "critical"
    if (match := _PRIORITY_LABEL.match(name)) is None:
        return None
    if match["level"]:
        return ("critical", "high", "medium", "low")[int(match["level"])]
    return _PRIORITY_WORDS.get(match["word"])


def _type_of(name: str) -> str | None:
    match = _TYPE_LABEL.match(name)
    return _TYPE_WORDS.get(match["word"].strip() if match else name)


class LabelMap:
    """How labels state one field of the store (priority or type): the value one label states,
    the field's value from all of an issue's labels, and the labels that write a value."""

    def __init__(self, *, rank: tuple[str, ...], default: str, parse: Callable[[str], str | None],
                 written: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> None:
        overrides = overrides or {}
        if bad := sorted({v for v in overrides.values() if v not in rank}):
            raise SourceError("config", f"label overrides name unknown values: {', '.join(bad)} "
                                        f"(known: {', '.join(rank)})")
        self.rank = rank  # strongest first
        self.default = default
        self._parse = parse
        self._overrides = {_normal(k): v for k, v in overrides.items()}
        # An override is also the label written for its value (the first one given wins).
        self._written = {**written, **{v: k for k, v in reversed(list(overrides.items()))}}

    def value_of(self, label: str) -> str | None:
        name = _normal(label)
        return self._overrides.get(name) or self._parse(name)

    def pick(self, labels: Iterable[str], *, first: str | None = None) -> str:
        """The value stated by ``first`` (a GitHub issue type) if any, else the strongest stated
        by the labels, else the default."""
        if first and (value := self.value_of(first)):
            return value
        stated = {value for label in labels if (value := self.value_of(label))}
        return next((v for v in self.rank if v in stated), self.default)

    def relabel(self, labels: Iterable[str], value: str) -> list[str]:
        """``labels`` with the ones stating this field replaced by the label of ``value``."""
        kept = [label for label in labels if self.value_of(label) is None]
        written = self._written.get(value)
        return [*kept, written] if written else kept


def priority_labels(overrides: Mapping[str, str] | None = None) -> LabelMap:
    return LabelMap(rank=("critical", "high", "medium", "low", "none"), default="none",
                    parse=_priority_of, overrides=overrides,
                    written={p: f"priority: {p}" for p in ("critical", "high", "medium", "low")})


def type_labels(overrides: Mapping[str, str] | None = None) -> LabelMap:
    return LabelMap(rank=("epic", "bug", "feature", "story", "task", "subtask"), default="task",
                    parse=_type_of, overrides=overrides,
                    written={"bug": "bug", "feature": "enhancement", "epic": "epic",
                             "story": "story"})
