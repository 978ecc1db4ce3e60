"""Reading the gate's hold reason into a reason code. Pure: no ORM."""

from __future__ import annotations

PROCESSING_PREFIX = "processing error"
# How providers word a refusal (see pipelines.providers.openai_compat).
_POLICY_WORDS = ("refused", "content filter", "content policy", "content_filter")


def reason_code_of(reason: str) -> str:
    """The reason code of a hold reason. The gate lists reasons most fundamental first
    (schema, then rules, then confidence), so the first one names the task."""
    text = reason.strip()
    if text.startswith(PROCESSING_PREFIX):
        lowered = text.lower()
        if any(word in lowered for word in _POLICY_WORDS):
            return "content_policy"
        return "processing_error"
    first = text.split("; ", 1)[0]
    if first.startswith("schema error"):
        return "schema"
    if first.startswith("rule "):
        return "rule"
    if first.startswith(("low confidence", "no confidence")):
        return "low_confidence"
    return "other"
