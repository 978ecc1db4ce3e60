"""Request guards: one that must act before Django reads a body, one that turns an
unreachable database into a clear 503."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.response import SimpleTemplateResponse

logger = logging.getLogger(__name__)

# Long enough for a database restart or a failover; short enough that an integrator retrying
# on it loses little time.
DATABASE_RETRY_AFTER_SECONDS = 5
_UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unavailable · Sluice</title></head>
<body><main><h1>Sluice is unavailable for a moment</h1>
<p>Its database cannot be reached. Nothing already accepted is lost; try again in a few
seconds.</p></main></body></html>
"""


class BodySizeLimitMiddleware:
    """Refuse a request whose declared body is larger than SLUICE_MAX_UPLOAD_BYTES with 413,
    before anything reads it: Django's own limit leaves out file uploads, which it would spool
    to disk whole before a view could check their size."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.SLUICE_MAX_UPLOAD_BYTES:
            limit_mb = settings.SLUICE_MAX_UPLOAD_BYTES // (1024 * 1024)
            message = f"The request is larger than {limit_mb} MB."
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {"code": "too_large", "message": message, "field": None}, status=413
                )
            response = SimpleTemplateResponse("413.html", {"message": message}, status=413)
            return response.render()
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After, never an HTML 500, while the database cannot be reached
    (restarting, failing over, a connection cut): the API says so as JSON in its error shape,
    so an integrator retries the request, and pages say so in a sentence. Django drops the
    broken connection at the end of the request and the next one reconnects."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        # OperationalError: the server went away or refused; InterfaceError: the connection
        # this process held was already closed. Other database errors are bugs: a 500.
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable, answered 503: %s", str(exception)[:300])
        message = "The database cannot be reached; try again in a few seconds."
        if request.path.startswith("/api/"):
            response = JsonResponse(
                {"code": "unavailable", "message": message, "field": None}, status=503
            )
        else:
            response = HttpResponse(_UNAVAILABLE_PAGE, status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
