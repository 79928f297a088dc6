"""The admin API's JSON Schemas (Draft 2020-12), one file per name: ``key_create.json`` is the
schema ``key_create``.

A schema names another with ``{"$ref": "key"}``; :class:`SchemaBook` resolves those for the
validators, and the OpenAPI document rewrites them to ``#/components/schemas/key``. Every file is
checked and every validator compiled once, when the API application is built.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ...handlers.arguments import ArgumentCheck

__all__ = ["SchemaBook", "as_component"]

_COMPONENTS = "#/components/schemas/"


class SchemaBook:
    """Every schema of the API by name, checked, with the registry that resolves their refs."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        for name, schema in schemas.items():
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"api schema {name}.json is not a valid JSON Schema: "
                                 f"{exc.message}") from None
        self.schemas = schemas
        self.registry: Registry = Registry().with_resources(
            (name, Resource.from_contents(schema, default_specification=DRAFT202012))
            for name, schema in schemas.items())

    @classmethod
    def load(cls) -> SchemaBook:
        """The schema files shipped in this package."""
        folder = resources.files(__package__)
        return cls({entry.name.removesuffix(".json"): orjson.loads(entry.read_bytes())
                    for entry in folder.iterdir() if entry.name.endswith(".json")})

    def schema(self, name: str) -> dict[str, Any]:
        try:
            return self.schemas[name]
        except KeyError:
            raise ValueError(f"no api schema named {name!r} (api/schemas/{name}.json)") from None

    def check(self, name: str, *, subject: str, noun: str) -> ArgumentCheck:
        """A compiled validator of schema ``name`` whose errors read "invalid <noun> for
        <subject>: ..."."""
        return ArgumentCheck(subject, self.schema(name), noun=noun, registry=self.registry)


def as_component(schema: Any) -> Any:
    """``schema`` with each ``{"$ref": "<name>"}`` pointing into the OpenAPI components."""
    if isinstance(schema, dict):
        out = {k: as_component(v) for k, v in schema.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            out["$ref"] = _COMPONENTS + ref
        return out
    if isinstance(schema, list):
        return [as_component(v) for v in schema]
    return schema
