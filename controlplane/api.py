"""The REST API: one NinjaAPI, versioned under /api/v1/, with its OpenAPI document at
/api/openapi.json and interactive docs at /api/docs. Every error is JSON with a code, the field
and a message; bad input never gives a 500."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from pipelines.api import ApiError
from pipelines.api import router as items_router

# Answers an operation may give besides those it declares, always as the same JSON error.
COMMON_ERRORS = {
    400: ("body", "The body is not JSON (or not UTF-8, or nested too deeply)."),
    401: ("security", "No key, an unknown key or a revoked key."),
    413: ("body", "The body is larger than this server takes."),
    422: ("any", "A field is missing, of the wrong type or out of range."),
    503: ("any", "The database is unreachable for a moment: retry after Retry-After seconds."),
}


class SluiceApi(NinjaAPI):
    """The NinjaAPI whose OpenAPI document also lists the errors every operation can answer
    (bad JSON, no key, too large, invalid, database unreachable), so clients and schema
    checkers know them."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        error = {"$ref": "#/components/schemas/ErrorOut"}
        for operations in schema["paths"].values():
            for operation in operations.values():
                for status, (when, description) in COMMON_ERRORS.items():
                    applies = {
                        "body": "requestBody" in operation,
                        "security": bool(operation.get("security")),
                        "any": True,
                    }[when]
                    if applies and status not in operation["responses"]:
                        operation["responses"][status] = {
                            "description": description,
                            "content": {"application/json": {"schema": error}},
                        }
        return schema


api = SluiceApi(
    title="Sluice API",
    version="1",
    description="Submit items to a client's pipelines and read their results. Authenticate "
    "with `Authorization: Bearer <key>`; a key reaches only its own client's pipelines.",
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
api.add_router("/v1/", items_router)


def _error(request, status: int, code: str, message: str, field: str | None = None, **extra):
    body = {"code": code, "message": message, "field": field, **extra}
    return api.create_response(request, body, status=status)


def _field(loc) -> str | None:
    # Ninja puts where a value came from first ("body", "query", "path", "header").
    parts = [
        str(p) for p in loc if p not in ("body", "query", "path", "header", "payload", "filters")
    ]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or None


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    errors = [
        {"field": _field(error.get("loc", ())), "message": error.get("msg", "invalid")}
        for error in exc.errors
    ]
    first = errors[0] if errors else {"field": None, "message": "invalid"}
    return _error(request, 422, "invalid", first["message"], first["field"], errors=errors)


@api.exception_handler(ApiError)
def on_api_error(request, exc: ApiError):
    response = _error(request, exc.status_code, exc.code, exc.message, exc.field)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(AuthenticationError)
def on_authentication_error(request, exc):
    response = _error(
        request,
        401,
        "unauthorized",
        "Send a valid API key as 'Authorization: Bearer <key>'.",
        "Authorization",
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    code = {400: "malformed", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "error"
    )
    return _error(request, exc.status_code, code, str(exc))


@api.exception_handler(RequestDataTooBig)
def on_too_big(request, exc):
    return _error(request, 413, "too_large", "The request body is larger than this server takes.")
