"""Request guards that must act before Django reads a body."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.template.response import SimpleTemplateResponse


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
