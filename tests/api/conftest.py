"""API-spec tests: docs/openapi.yaml against the real app (tests/web's `make_gateway`), and a
validator for live answers against the spec's schemas (JSON Schema 2020-12, OpenAPI 3.1)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.web.conftest import Gateway, GatewayFactory, gw, make_gateway

__all__ = ["Gateway", "GatewayFactory", "gw", "make_gateway"]

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
SPEC_URI = "urn:gateway:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def load_spec() -> dict[str, Any]:
    doc = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    return load_spec()


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def pointer(*parts: str) -> str:
    return "#/" + "/".join(_escape(p) for p in parts)


def at(ptr: str) -> Any:
    target: Any = load_spec()
    for part in ptr[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        target = target[int(key)] if isinstance(target, list) else target[key]
    return target


def resolve(ptr: str) -> tuple[Any, str]:
    """The node at a pointer, following local `$ref`s; with the pointer it was found at."""
    node = at(ptr)
    while isinstance(node, dict) and "$ref" in node:
        ptr = node["$ref"]
        assert ptr.startswith("#/"), ptr
        node = at(ptr)
    return node, ptr


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def validator(ptr: str) -> jsonschema.Draft202012Validator:
    """A validator for the schema at a JSON pointer of the spec; its `#/components/...` refs
    resolve against the whole document."""
    return jsonschema.Draft202012Validator(
        {"$ref": SPEC_URI + ptr}, registry=_registry(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    return validator(pointer("components", "schemas", name))


def check_response(method: str, template: str, status: int, headers: Any,
                   body: Any) -> None:
    """Assert that an answer is one the spec documents for that operation: the status is
    listed, the content type is one of the listed ones, required headers (and their schemas)
    hold, and a JSON body validates against the listed schema."""
    op_ptr = pointer("paths", template, method.lower())
    responses = at(op_ptr)["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} not documented"
    response, rptr = resolve(pointer("paths", template, method.lower(), "responses", str(status)))
    for name in response.get("headers") or {}:
        header, hptr = resolve(rptr + "/headers/" + _escape(name))
        value = headers.get(name)
        if header.get("required"):
            assert value is not None, f"{method} {template} {status}: header {name} missing"
        if value is not None:
            validator(hptr + "/schema").validate(value)
    content = response.get("content") or {}
    if not content:
        return
    ctype = headers.get("Content-Type", "").split(";")[0].strip()
    if not ctype and body in (None, b"", "") and response.get("x-body-optional"):
        return  # e.g. RFC 6750 §3.1: no credentials, no error body
    assert ctype in content, f"{method} {template} {status}: content type {ctype!r} not listed"
    if "schema" in content[ctype] and (ctype == "application/json" or ctype.endswith("+json")):
        validator(rptr + "/content/" + _escape(ctype) + "/schema").validate(body)
