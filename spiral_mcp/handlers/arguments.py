"""How a tool's arguments are checked before its handler sees them.

Each tool's input schema (JSON Schema 2020-12) is compiled once. Most tools' schemas are a flat
object of scalar properties; for those a quick check says yes to the usual valid call without
jsonschema's walk (it never says yes to what the validator would refuse: a no goes to the
validator, which also says why). Arguments nested absurdly deep are refused before anything
recursive walks them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry

from ..errors import ErrorCode, ServiceError
from ..schema_types import integral_floats

__all__ = ["MAX_ARGUMENT_DEPTH", "ArgumentCheck"]

# Arguments nested deeper are refused before anything recursive (validation, audit, hashing,
# ADF) walks them: Python's stack and orjson (255 levels) give out long before a tool would.
MAX_ARGUMENT_DEPTH = 64


# What the quick check understands. Anything else in a schema (a nested object, an array, a
# $ref, a format assertion turned on...) leaves that schema to jsonschema alone.
_ANNOTATIONS = frozenset({"$schema", "$comment", "title", "description", "default", "examples"})
_TOP_KEYWORDS = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
_PROPERTY_KEYWORDS = _ANNOTATIONS | {"type", "pattern", "minLength", "maxLength", "minimum",
                                     "maximum", "enum"}
_SCALARS: dict[str, tuple[type, ...]] = {
    # The exact Python types JSON values of each type decode to. Stricter than JSON Schema where
    # it is cheap to be (an integral float is an integer there, and bool is no int here): an
    # instance refused here still goes to the validator.
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def _quick_property(schema: Any) -> Callable[[Any], bool] | None:
    if not isinstance(schema, dict) or not schema.keys() <= _PROPERTY_KEYWORDS:
        return None
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not types or not all(t in _SCALARS for t in types):
        return None
    allowed = frozenset(python_type for t in types for python_type in _SCALARS[t])
    try:
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    except (re.error, TypeError):
        return None  # jsonschema reports it when it validates, as it always did
    min_length, max_length = schema.get("minLength", 0), schema.get("maxLength")
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    enum = schema.get("enum")
    if enum is not None and not all(type(e) is str for e in enum):
        return None

    def check(value: Any) -> bool:
        if type(value) not in allowed:
            return False
        if type(value) is str:
            # As jsonschema: re.search, lengths in code points.
            if pattern is not None and pattern.search(value) is None:
                return False
            if len(value) < min_length or (max_length is not None and len(value) > max_length):
                return False
        elif (type(value) is int or type(value) is float) and (
                (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum)):
            return False
        return enum is None or (type(value) is str and value in enum)

    return check


def _quick_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A fast, conservative validity test for a flat object schema of scalar properties."""
    if not schema.keys() <= _TOP_KEYWORDS or schema.get("type") != "object":
        return None
    additional = schema.get("additionalProperties", True)
    if additional not in (True, False):
        return None
    checks = {}
    for name, property_schema in schema.get("properties", {}).items():
        if (check := _quick_property(property_schema)) is None:
            return None
        checks[name] = check
    required = tuple(schema.get("required", ()))

    def surely_valid(instance: Any) -> bool:
        if type(instance) is not dict:
            return False
        for name in required:
            if name not in instance:
                return False
        for name, value in instance.items():
            check = checks.get(name)
            if check is None:
                if additional is False:
                    return False
            elif not check(value):
                return False
        return True

    return surely_valid


def _too_deep(arguments: Any) -> str | None:
    """The path of the first container nested deeper than MAX_ARGUMENT_DEPTH, or None; a walk
    with its own stack, so no depth can overflow it."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(arguments, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            children: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if len(path) >= MAX_ARGUMENT_DEPTH:
            return "/" + "/".join(map(str, path))
        stack.extend((child, (*path, name)) for name, child in children)
    return None


# A refusal quotes what was refused (jsonschema's messages hold the whole value): each message
# is cut to its start and end (where "is too long" and the like are said), and only the first
# details are listed, so an answer never repeats a big input, nor all of a secret sent in it.
_MAX_MESSAGE = 240
_MAX_DETAILS = 20


def _cut(message: str) -> str:
    if len(message) <= _MAX_MESSAGE:
        return message
    return f"{message[:160]}...{message[-60:]}"


def _invalid_arguments(tool: str, details: list[dict[str, str]], *,
                       noun: str = "arguments") -> ServiceError:
    return ServiceError(
        ErrorCode.VALIDATION_ERROR,
        f"invalid {noun} for {tool}: "
        + "; ".join(f"{d['path']}: {d['message']}" for d in details[:5]),
        details=details,
    )


def _message(error: ValidationError) -> str:
    """What is wrong with a value. A secret (a ``writeOnly`` property, such as a source's token
    in the admin API's body) is never repeated in a refusal, which callers show and log:
    jsonschema's own messages start with the value."""
    if not (isinstance(error.schema, dict) and error.schema.get("writeOnly") is True):
        return error.message
    limit = error.validator_value
    return {"type": f"(not shown: a secret) is not of type {limit!r}",
            "minLength": f"(not shown: a secret) is shorter than {limit} characters",
            "maxLength": f"(not shown: a secret) is longer than {limit} characters",
            }.get(str(error.validator), f"(not shown: a secret) fails its {error.validator} check")


def _validation_details(validator: Draft202012Validator, arguments: Any) -> list[dict[str, str]]:
    details = []
    errors = itertools.islice(validator.iter_errors(arguments), _MAX_DETAILS)
    for error in sorted(errors, key=lambda e: list(e.absolute_path)):
        path = _cut("/".join(str(p) for p in error.absolute_path))
        details.append({"path": "/" + path if path else "/", "message": _cut(_message(error))})
    return details


class ArgumentCheck:
    """One tool's compiled input schema (or, with ``noun``, another input's: the admin API
    checks a request's body and query this way, "invalid body for POST /api/v1/keys: ...").
    ``registry`` resolves the ``$ref`` of schemas that name others."""

    __slots__ = ("_noun", "_surely_valid", "_tool", "validator")

    def __init__(self, tool: str, schema: dict[str, Any], *, noun: str = "arguments",
                 registry: Registry | None = None) -> None:
        self._tool = tool
        self._noun = noun
        self.validator = Draft202012Validator(schema) if registry is None else \
            Draft202012Validator(schema, registry=registry)
        self._surely_valid = _quick_check(schema)

    def __call__(self, arguments: Any) -> Any:
        """The arguments as the handler gets them, or VALIDATION_ERROR naming each failing
        field."""
        if self._surely_valid is not None and self._surely_valid(arguments):
            return arguments
        if (path := _too_deep(arguments)) is not None:
            raise _invalid_arguments(self._tool, [{
                "path": path, "message": f"nested deeper than {MAX_ARGUMENT_DEPTH} levels"}],
                noun=self._noun)
        if details := _validation_details(self.validator, arguments):
            raise _invalid_arguments(self._tool, details, noun=self._noun)
        # JSON Schema counts 5.0 as an integer; a handler slicing rows or binding an int does
        # not.
        return integral_floats(arguments, self.validator.schema)
