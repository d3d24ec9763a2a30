"""The client against the daemon's own description of its API
(``GET /v1/openapi.json``): every route the daemon serves is one the client
calls and the other way round, each with the same query parameters, and
every request body model has the daemon's fields (names, and which are
required), nested objects included. A route or field added on either side
without the other fails here."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest

import allot
from allot.requests import ROUTES

Shape = Any  # ("object", {name: Shape}, required) | ("map", Shape) | ("scalar",) | ("union", [Shape])


def resolve(schema: Any, defs: Dict[str, Any]) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = defs[name]
    return schema


def shape(schema: Any, defs: Dict[str, Any]) -> Shape:
    """What a schema says about object fields, ignoring scalar types and formats."""
    schema = resolve(schema, defs)
    if not isinstance(schema, dict):
        return ("scalar",)
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        shapes = [shape(b, defs) for b in branches]
        structured = [s for s in shapes if s != ("scalar",)]
        if not structured:
            return ("scalar",)
        if len(structured) == 1:
            return structured[0]
        return ("union", sorted(structured, key=repr))
    if "properties" in schema:
        props = {k: shape(v, defs) for k, v in schema["properties"].items()}
        return ("object", props, frozenset(schema.get("required", [])))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        return ("map", shape(extra, defs))
    if schema.get("type") == "array" and "items" in schema:
        inner = shape(schema["items"], defs)
        return ("scalar",) if inner == ("scalar",) else ("array", inner)
    return ("scalar",)


def differences(ours: Shape, theirs: Shape, path: str = "body") -> List[str]:
    if ours == theirs:
        return []
    if ours[0] != theirs[0]:
        return [f"{path}: the client has {ours[0]}, the daemon {theirs[0]}"]
    if ours[0] == "object":
        out = []
        mine, daemon = set(ours[1]), set(theirs[1])
        out += [f"{path}.{k}: the daemon takes it, the client does not know it" for k in sorted(daemon - mine)]
        out += [f"{path}.{k}: the client sends it, the daemon does not take it" for k in sorted(mine - daemon)]
        if ours[2] != theirs[2]:
            out.append(f"{path}: required fields differ: client {sorted(ours[2])}, daemon {sorted(theirs[2])}")
        for k in sorted(mine & daemon):
            out += differences(ours[1][k], theirs[1][k], f"{path}.{k}")
        return out
    if ours[0] in ("map", "array"):
        return differences(ours[1], theirs[1], f"{path}[*]")
    if ours[0] == "union":
        return [f"{path}: the client's alternatives {ours[1]} differ from the daemon's {theirs[1]}"]
    return [f"{path}: {ours} != {theirs}"]


@pytest.fixture
def doc(client: allot.Client) -> Dict[str, Any]:
    return client.openapi()


def operations(doc: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {f"{method.upper()} {path}": op for path, ops in doc["paths"].items() for method, op in ops.items()}


def test_every_route_of_the_daemon_is_one_the_client_calls(doc: Dict[str, Any]) -> None:
    daemon = set(operations(doc))
    client = set(ROUTES)
    assert sorted(daemon - client) == [], "routes the daemon serves that the client does not know"
    assert sorted(client - daemon) == [], "routes the client calls that the daemon does not serve"


def test_every_route_has_its_methods_on_both_clients() -> None:
    for key, r in ROUTES.items():
        assert r.methods, f"{key} names no client method"
        for name in r.methods:
            assert callable(getattr(allot.Client, name, None)), f"Client.{name} ({key})"
            assert callable(getattr(allot.AsyncClient, name, None)), f"AsyncClient.{name} ({key})"


def test_query_parameters_match(doc: Dict[str, Any]) -> None:
    for key, op in operations(doc).items():
        daemon = sorted(p["name"] for p in op.get("parameters", []) if p.get("in") == "query")
        assert daemon == sorted(ROUTES[key].query), f"{key}: query parameters"


def body_schema(op: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    body = op.get("requestBody")
    if body is None:
        return None
    schema: Dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


def test_request_bodies_match(doc: Dict[str, Any]) -> None:
    daemon_defs: Dict[str, Any] = dict(doc.get("components", {}).get("schemas", {}))
    problems: List[str] = []
    with_body: List[Tuple[str, str]] = []
    for key, op in operations(doc).items():
        schema = body_schema(op)
        model = ROUTES[key].body
        if schema is None or model is None:
            assert (schema is None) == (model is None), f"{key}: the daemon {'takes' if schema else 'takes no'} body, the client {'sends one' if model else 'sends none'}"
            continue
        ours_schema = model.model_json_schema(by_alias=True)
        ours = shape(ours_schema, ours_schema.get("$defs", {}))
        theirs = shape(schema, {**daemon_defs, **schema.get("$defs", {}), **schema.get("definitions", {})})
        assert theirs != ("scalar",), f"{key}: the daemon's body schema says nothing of its fields: {schema}"
        problems += [f"{key} {p}" for p in differences(ours, theirs)]
        with_body.append((key, model.__name__))
    assert not problems, "\n".join(problems)
    assert len(with_body) >= 9, with_body


def test_the_comparison_finds_a_missing_field() -> None:
    """The checker itself: a field on one side only, or a required one, is reported."""
    theirs = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    ours = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert differences(shape(ours, {}), shape(theirs, {})) == ["body.b: the daemon takes it, the client does not know it"]
    nested_theirs = {"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"$ref": "#/$defs/L"}}},
                     "$defs": {"L": {"type": "object", "properties": {"x": {}, "y": {}}}}}
    nested_ours = {"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {}}}}}}
    assert differences(shape(nested_ours, {}), shape(nested_theirs, nested_theirs["$defs"])) == [
        "body.m[*].y: the daemon takes it, the client does not know it"
    ]
    req = {"type": "object", "properties": {"a": {}}, "required": []}
    assert differences(shape(req, {}), shape(theirs | {"properties": {"a": {}}}, {})) != []


