"""What the pages that take an uploaded CSV or JSONL file share."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.core.exceptions import ValidationError

from controlplane.forms import copy_errors
from pipelines.services.file_imports import file_size_check


def upload_start[J](form: forms.Form, start: Callable[[str, bytes], J]) -> J | None:
    """Hand the file of a valid form to `start(filename, content)`, checking its size before
    reading it; None, with the service's errors on the form, when it is refused."""
    upload = form.cleaned_data["file"]
    try:
        file_size_check(upload.size)
        return start(upload.name, upload.read())
    except ValidationError as exc:
        copy_errors(form, exc)
        return None
