"""Every status an operation can answer, documented with the kit's error shape.

FastAPI documents an operation's success and its own `HTTPValidationError` (`{"detail": ...}`),
which the kit never sends: every refusal is `{"error": {"code", "message", "details"}}`
(`shared.errors`). A client generated from the document would not know the 401, 403, 404,
409, 413 or 503 it may get. This fills them in from what the operation is: one that needs a
role (`x-roles`) may answer 401 and 403; one with a path parameter 404; one with parameters or
a body 422; a write 400 and 409; one with a body 413 and 415; every one 500 and 503 (the store
busy under load, `Retry-After`).
"""

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "description": "e.g. invalid, not_found, conflict"},
            "message": {"type": "string", "description": "What is wrong and where"},
            "details": {"type": "array", "items": {"type": "object", "properties": {
                "loc": {"type": "string"}, "msg": {"type": "string"}}}},
        }}},
}
DESCRIPTIONS = {
    400: "The request cannot be carried out as it stands",
    401: "No token, or a token that is invalid, expired or lives too long",
    403: "The token's role may not do this (the refusal is audited)",
    404: "Not found (or not visible to this unit)",
    409: "Conflicts with the record's state, or someone changed it meanwhile: reload",
    413: "The body is too large",
    415: "The body's media type is not accepted",
    422: "Invalid input: the details say what is wrong and where",
    500: "Internal error (logged)",
    503: "The store is busy: repeat after Retry-After seconds",
}
WRITES = {"post", "put", "patch", "delete"}


def statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    found = [500, 503]
    if operation.get("x-roles"):
        found += [401, 403]
    if "{" in path:
        found.append(404)
    if operation.get("parameters") or "requestBody" in operation:
        found.append(422)
    if method in WRITES:
        found += [400, 409]
    if "requestBody" in operation:
        found += [413, 415]
    return sorted(set(found))


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` list every error status of every operation, with the error shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "errors_documented", False) and app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                for status in statuses(path, method, operation):
                    answer = operation["responses"].setdefault(
                        str(status), {"description": DESCRIPTIONS[status]})
                    answer["content"] = error
        app.openapi_schema = schema
        app.state.errors_documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
