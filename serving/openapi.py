"""The OpenAPI schema, kept equal to what the service answers.

FastAPI derives most of it from the routes; this module adds what it cannot see: the request
bodies (read by serving/bodies.py, not by FastAPI), the limits that come from the settings and
the model being served (`k` up to `max_k`, `requests` up to `max_batch`, exactly `feature_dim`
features), the API key where one is set, and one `Problem` body for every error status. The
schema is rebuilt when the served model's feature dimension changes.

It is written as OpenAPI 3.0.3, whose schemas read `integer` as JSON Schema draft 4 does: a
number written without a fraction. That is what the service accepts (`"k": 5.0` is refused, as
are `0` for a bool and `"5"` for an int); OpenAPI 3.1's dialect would call `5.0` an integer.
FastAPI writes 3.1, so `_as_openapi_30` rewrites the one construct that differs here: a nullable
value, `anyOf: [X, {"type": "null"}]`, becomes `X` with `nullable: true`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.auth import HEADER
from serving.schemas import Problem
from serving.settings import Settings

REF = "#/components/schemas/{model}"
BODY_ERRORS = {
    400: "the body is not valid JSON",
    413: "the body is larger than max_body_bytes",
    415: "the Content-Type is not application/json, or the body is compressed (Content-Encoding)",
    422: "a field is invalid (the field is named in detail)",
}


def body_spec(model: type[BaseModel]) -> dict:
    """`openapi_extra` of a route whose handler reads `model` from the body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def error_responses(*statuses: int, **descriptions: str) -> dict:
    """`responses` of a route: each status with the Problem body; descriptions by `e404=...`."""
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(f"e{status}", BODY_ERRORS.get(status, "refused")),
        }
        for status in statuses
    }


def schema_builder(
    app: FastAPI,
    settings: Settings,
    body_models: list[type[BaseModel]],
    guarded: set[tuple[str, str]],
    feature_dim: Callable[[], int | None],
) -> Callable[[], dict]:
    """The function to install as `app.openapi`."""
    cache: dict[int | None, dict] = {}

    def build() -> dict:
        dim = feature_dim()
        if dim not in cache:
            cache.clear()
            cache[dim] = _schema(app, settings, body_models, guarded, dim)
        return cache[dim]

    return build


def _schema(app, settings, body_models, guarded, feature_dim) -> dict:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.summary,  # 3.0 has no info.summary
        routes=app.routes,
        openapi_version="3.0.3",
    )
    _, definitions = models_json_schema(
        [(model, "validation") for model in body_models], ref_template=REF
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))
    components["RecommendationRequest"]["properties"]["k"]["maximum"] = settings.max_k
    components["BatchRequest"]["properties"]["requests"]["maxItems"] = settings.max_batch
    if feature_dim is not None:
        features = components["NewArtwork"]["properties"]["features"]
        features["minItems"] = features["maxItems"] = feature_dim
    documented = [(m, p) for m, p in guarded if m.lower() in schema["paths"].get(p, {})]
    if settings.api_key is not None:
        schema["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": HEADER}
        }
        for method, path in documented:
            schema["paths"][path][method.lower()]["security"] = [{"ApiKey": []}]
    else:
        for method, path in documented:
            schema["paths"][path][method.lower()]["responses"].pop("401", None)
    return _as_openapi_30(schema)


def _as_openapi_30(node):
    """`anyOf: [X, {"type": "null"}]` -> X with `nullable: true`, everywhere in `node`."""
    if isinstance(node, list):
        return [_as_openapi_30(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_openapi_30(value) for key, value in node.items()}
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1 and "$ref" in rest[0]:
            node["allOf"] = rest  # a $ref takes no siblings in 3.0
        elif len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    return node
