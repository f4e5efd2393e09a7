"""Domain errors and the one JSON shape every 4xx answer has.

`{"error": {"code": ..., "message": ..., "details": [{"loc": ..., "msg": ...}]}}`
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException


class DomainError(Exception):
    """A refusal the caller can understand; `status` maps it to HTTP."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    """The action does not fit the record's current state."""

    status, code = 409, "conflict"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Invalid(DomainError):
    status, code = 422, "invalid"


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "too_many_requests", 503: "unavailable",
}


DUPLICATE_KEY = 11000  # the server's code for a write refused by a unique index


def store_busy(exc: BaseException) -> bool:
    """FerretDB's SQLite store answered "database is locked" (SQLITE_BUSY, after its own busy
    timeout): other writes held it under load. Not a fault of the request nor of the code:
    the same request a moment later succeeds."""
    if not isinstance(exc, PyMongoError):
        return False
    text = f"{exc} {getattr(exc, 'details', '')}"  # a bulk write says it in its details
    return "database is locked" in text or "SQLITE_BUSY" in text


def store_unreachable(exc: BaseException) -> bool:
    """The database could not be reached (connection refused or reset, no server selected):
    FerretDB restarting, say. The driver reconnects by itself; the request did not fail for
    what it asked."""
    return isinstance(exc, ConnectionFailure)


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def error_response(status: int, code: str, message: str, details=None, headers=None):
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        on_refusal = getattr(request.app.state, "on_refusal", None)
        if exc.status == 403 and on_refusal is not None:
            await on_refusal(request, exc)
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        details = [{"loc": _loc(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        first = details[0] if details else {"loc": "body", "msg": "invalid"}
        message = f"Invalid request: {first['loc']}: {first['msg']}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        return error_response(422, "invalid", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), None,
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        # Never a stack trace to the client; the log has it.
        return error_response(500, "internal", "Internal error; it has been logged.")
