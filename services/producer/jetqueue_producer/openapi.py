"""OpenAPI schemas of the bodies taken from pydantic, so the published contract is what the code validates."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition
from pydantic import BaseModel

# Litestar's own pydantic schemas lose constraints (a minimum of 0, patterns, extra="forbid", strict
# types), so clients and contract tests would be told less than the code enforces.

_SPECIAL = {"schema_not": "not", "schema_if": "if", "schema_else": "else"}


def _json_key(attr: str) -> str:
    if attr in _SPECIAL:
        return _SPECIAL[attr]
    head, *rest = attr.split("_")
    return head + "".join(part.title() for part in rest)


_ATTRS = {_json_key(f.name): f.name for f in fields(Schema)}
_ONE = {"not", "if", "then", "else", "items", "contains", "propertyNames", "contentSchema"}
_MANY = {"allOf", "anyOf", "oneOf", "prefixItems"}
_BY_NAME = {"properties", "patternProperties", "dependentSchemas"}
_DROPPED = {"title"}  # pydantic titles every property with its own name: noise in the document


def to_openapi(node: dict[str, Any], defs: dict[str, Any]) -> Schema:
    """A JSON Schema (pydantic's) as Litestar's ``Schema``, nested models inlined from ``defs``.

    Raises:
        ValueError: a keyword Litestar's ``Schema`` cannot carry (nothing is dropped silently).
    """
    if "$ref" in node:
        return to_openapi(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == "$defs":
            continue
        if key not in _ATTRS:
            raise ValueError(f"JSON Schema keyword {key!r} has no OpenAPI counterpart in Litestar")
        if key in _ONE or (key == "additionalProperties" and isinstance(value, dict)):
            value = to_openapi(value, defs)
        elif key in _MANY:
            value = [to_openapi(v, defs) for v in value]
        elif key in _BY_NAME:
            value = {k: to_openapi(v, defs) for k, v in value.items()}
        elif key == "type":
            value = [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
        elif key == "format":
            value = OpenAPIFormat(value)
        kwargs[_ATTRS[key]] = value
    return Schema(**kwargs)


def model_schema(model: type[BaseModel]) -> Schema:
    """The OpenAPI schema of ``model``, exactly as pydantic validates it."""
    doc = model.model_json_schema(ref_template="#/$defs/{model}")
    schema = to_openapi(doc, doc.get("$defs", {}))
    schema.title = model.__name__  # titled objects become named components
    return schema


class PydanticContractPlugin(OpenAPISchemaPlugin):
    """Publishes each pydantic model of the API as a component with pydantic's own JSON Schema."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return isinstance(value, type) and issubclass(value, BaseModel)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        # The registry's component object is filled in place, so Litestar references it by name.
        component: Schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        filled = model_schema(field_definition.annotation)
        for f in fields(Schema):
            setattr(component, f.name, getattr(filled, f.name))
        return component
