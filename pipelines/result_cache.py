"""The result cache's key: the same prompt version, model, parameters and rendered input give
the same key, so a model's answer can be reused instead of paid for again. No ORM here."""

from __future__ import annotations

import hashlib
import json

from pipelines.providers import CallRequest

PREFIX = "result:"


def result_key(*, version_id: int, model_id: int, request: CallRequest) -> str:
    """A cache key naming everything the answer depends on (the model by id, since its name
    alone could be reused by another provider)."""
    material = json.dumps(
        {
            "version": version_id,
            "model": model_id,
            "parameters": request.parameters,
            "prompt": request.prompt,
            "input": request.input_text,
            "labels": request.labels,
            "schema": request.output_schema,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return PREFIX + hashlib.sha256(material.encode()).hexdigest()
