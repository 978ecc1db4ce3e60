"""Small helpers for views that serve both plain and htmx requests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django_htmx.http import HttpResponseClientRedirect


def redirect_after_post(request: HttpRequest, to: str, *args) -> HttpResponse:
    """After a successful form: a normal redirect, or for htmx a full-page client redirect (a
    plain 302 would be followed by htmx and the whole page swapped into the form's target)."""
    url = resolve_url(to, *args)
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)
