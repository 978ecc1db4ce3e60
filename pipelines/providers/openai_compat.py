"""The OpenAI-compatible provider: the official `openai` SDK pointed at a configurable base URL,
so it serves OpenAI and every server speaking the protocol (vLLM, Ollama, llama.cpp, LiteLLM,
Azure). Every SDK failure leaves here as one of our error classes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import openai
from openai import AsyncOpenAI

from pipelines.providers.base import (
    CallRequest,
    CallResult,
    ConfigurationError,
    Kind,
    ProcessingError,
    Provider,
    ProviderError,
    ProviderLimitError,
    ProviderSettings,
    TransientError,
)

# Local servers (Ollama, llama.cpp) accept any key, but the SDK refuses to start without one.
_NO_KEY = "unused"

# Passed through from the prompt version's parameters; anything else there is ignored, since a
# parameter one server accepts can make another answer 400 for every item.
_NUMBER_PARAMETERS = ("temperature", "top_p")
_INTEGER_PARAMETERS = ("max_tokens", "seed")

# Quota exhaustion is reported as 400, 402, 403 or even 429 (OpenAI's "insufficient_quota"),
# told apart from a rate limit only by its wording.
_QUOTA_WORDS = re.compile(r"quota|billing|insufficient|credit", re.IGNORECASE)

_JSON_SNIPPET = 200
_LABEL_VALUE = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
# What models wrap a bare label in: whitespace, quotes, backticks, a final full stop.
_LABEL_WRAPPING = " \t\r\n\"'`."


class OpenAICompatProvider(Provider):
    """Chat completions against one OpenAI-compatible server, at most max_concurrency at once."""

    kind: ClassVar[str] = Kind.OPENAI

    def __init__(self, *, settings: ProviderSettings) -> None:
        if not settings.base_url:
            raise ConfigurationError("An OpenAI-compatible provider needs a base URL.")
        self._settings = settings
        self._key_env = settings.api_key_env
        # Checked here too, not only in the form: the value is sent to base_url, so no other
        # variable of this server may ever be read as a key.
        if self._key_env and not self._key_env.endswith(("_API_KEY", "_TOKEN")):
            raise ConfigurationError(
                "The API key variable must end in _API_KEY or _TOKEN; fix the provider."
            )
        if self._key_env:
            key = os.environ.get(self._key_env, "")
            if not key:
                raise ConfigurationError(
                    f"The environment variable {self._key_env} is not set; it should hold this "
                    "provider's API key."
                )
        else:
            key = _NO_KEY
        self._key = key
        # Retries belong to the engine, which knows the item's attempts, backoff and breaker;
        # SDK retries would hide failures from all three and multiply the latency.
        self._client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=key,
            max_retries=0,
            timeout=settings.timeout_seconds,
        )
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def call(self, request: CallRequest) -> CallResult:
        """Send the prompt as one user message and read the output, tokens and confidence."""
        if not request.model:
            raise ConfigurationError("No model name: say which model this provider should run.")
        json_mode = bool(request.output_schema)
        # On by default for classify steps, where they give the confidence; a prompt version can
        # set "logprobs": false for servers or models that refuse them.
        want_logprobs = bool(request.parameters.get("logprobs", request.labels is not None))
        messages: list[dict[str, str]] = []
        if json_mode:
            # OpenAI refuses JSON mode unless the messages mention JSON; operators' prompts
            # often do not.
            messages.append({"role": "system", "content": "Reply with a single JSON object."})
        messages.append({"role": "user", "content": request.prompt})
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            **_chat_parameters(request.parameters),
        }
        if json_mode:
            arguments["response_format"] = {"type": "json_object"}
        if want_logprobs:
            arguments["logprobs"] = True

        async with self._semaphore:
            started = time.perf_counter()
            try:
                response = await self._client.chat.completions.create(**arguments)
            except openai.APIError as exc:
                # Not chained: the SDK's exception can quote the key a server echoed back, and a
                # logged traceback would print it. Our message keeps the status and the reason.
                raise self._mapped(exc) from None
            latency_ms = (time.perf_counter() - started) * 1000

        if not response.choices:
            raise ProcessingError("The server answered with no choices.")
        choice = response.choices[0]
        content = choice.message.content
        input_tokens, output_tokens = _usage(response, request.prompt, content or "")
        if content is None or not content.strip():
            if choice.message.refusal:
                message = f"The model refused: {choice.message.refusal}"
            elif choice.finish_reason == "content_filter":
                message = "The provider's content filter withheld the output."
            else:
                message = "The model returned no content."
            raise ProcessingError(
                self._redacted(message), input_tokens=input_tokens, output_tokens=output_tokens
            )

        def invalid(message: str) -> ProcessingError:
            if choice.finish_reason == "length":
                message += " The output was cut off at max_tokens."
            return ProcessingError(
                self._redacted(message),
                raw=content,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )

        parsed = _json_object(content)
        if request.labels is not None:
            output, confidence = _classified(
                content=content,
                parsed=parsed,
                labels=request.labels,
                json_mode=json_mode,
                token_logprobs=_token_logprobs(choice),
                invalid=invalid,
            )
        else:
            if parsed is None and json_mode:
                raise invalid(f"The model's output is not a JSON object: {_snippet(content)}")
            # Without an output schema a step takes free text, kept under one key.
            output = parsed if parsed is not None else {"text": content}
            confidence = _self_reported(output)
        return CallResult(
            output=output,
            confidence=confidence,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            raw=content,
        )

    def _mapped(self, exc: openai.APIError) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):
            return TransientError(
                f"No answer from {self._settings.base_url} within "
                f"{self._settings.timeout_seconds:g} s."
            )
        if isinstance(exc, openai.APIConnectionError):
            return TransientError(
                f"Could not reach {self._settings.base_url}: "
                f"{self._redacted(str(exc.__cause__ or exc))}"
            )
        if not isinstance(exc, openai.APIStatusError):
            return ProcessingError(
                f"The server's answer could not be read: {self._redacted(str(exc))}"
            )
        status = exc.status_code
        detail = self._redacted(_server_message(exc))
        quota = bool(_QUOTA_WORDS.search(f"{detail} {exc.code or ''} {exc.type or ''}"))
        if quota and status in (400, 402, 403, 429):
            return ProviderLimitError(
                f"The provider's quota or budget is exhausted ({status}): {detail}"
            )
        if status in (408, 409, 429) or status >= 500:
            # 408 and 409 ask to be tried again; the SDK's own retry rule reads them the same way.
            return TransientError(
                f"The server answered {status}: {detail}",
                retry_after=_retry_after(exc.response.headers),
            )
        if status == 401:
            if self._key_env:
                return ConfigurationError(f"The API key in ${self._key_env} was refused.")
            return ConfigurationError(
                "The server requires an API key: name the environment variable that holds it."
            )
        if status == 404:
            # A misspelt model or base URL fails every item the same way: pausing the pipeline
            # beats filling the review queue with copies of one configuration mistake.
            return ConfigurationError(
                f"{self._settings.base_url} has no such model or endpoint (404): {detail}"
            )
        return ProcessingError(f"The server refused the request ({status}): {detail}")

    def _redacted(self, text: str) -> str:
        # Some servers echo the key they refused; it must never reach a log or the UI.
        if self._key != _NO_KEY and len(self._key) >= 4:
            return text.replace(self._key, "[redacted]")
        return text


def _chat_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for name in _NUMBER_PARAMETERS:
        value = parameters.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f'The parameter "{name}" must be a number, not {value!r}.')
        chosen[name] = value
    for name in _INTEGER_PARAMETERS:
        value = parameters.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(
                f'The parameter "{name}" must be a whole number, not {value!r}.'
            )
        chosen[name] = value
    return chosen


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        nested = body.get("error")
        message = nested.get("message") if isinstance(nested, Mapping) else body.get("message")
        if isinstance(message, str) and message:
            return message
    return exc.message


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or Retry-After."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _usage(response: Any, prompt: str, content: str) -> tuple[int, int]:
    usage = response.usage
    if usage is not None:
        return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    # Some servers leave usage out. Four characters a token is the usual English rule of thumb;
    # an estimate keeps the cost visible, where zero would make the call look free.
    return math.ceil(len(prompt) / 4), math.ceil(len(content) / 4)


def _snippet(text: str) -> str:
    return text[:_JSON_SNIPPET] + ("…" if len(text) > _JSON_SNIPPET else "")


def _json_object(content: str) -> dict[str, Any] | None:
    text = content.strip()
    # Models on local servers fence their JSON in markdown even when asked not to.
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _self_reported(output: Mapping[str, Any]) -> float | None:
    value = output.get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # A value outside 0..1 (a percentage, a made-up scale) cannot be compared to a threshold;
    # no confidence sends the item to review, which is safer than guessing the scale.
    return float(value) if 0.0 <= value <= 1.0 else None


def _token_logprobs(choice: Any) -> list[tuple[str, float]] | None:
    logprobs = getattr(choice, "logprobs", None)
    tokens = getattr(logprobs, "content", None) if logprobs is not None else None
    if not tokens:
        return None
    return [(token.token, float(token.logprob)) for token in tokens]


def _label_probability(
    content: str, span: tuple[int, int], tokens: list[tuple[str, float]]
) -> float | None:
    """Joint probability of the tokens covering content[span]: exp of their summed logprobs.

    The joint probability, not the first token's: labels that share a first token ("account",
    "accounting") would otherwise each look as certain as their common prefix."""
    if "".join(token for token, _ in tokens) != content:
        # Offsets only line up when the tokens spell the content exactly.
        return None
    start, end = span
    position, total, covered = 0, 0.0, False
    for token, logprob in tokens:
        token_start, position = position, position + len(token)
        if token_start < end and position > start:
            total += logprob
            covered = True
    return min(1.0, math.exp(total)) if covered else None


def _bare_span(content: str) -> tuple[int, int]:
    start = len(content) - len(content.lstrip(_LABEL_WRAPPING))
    end = len(content.rstrip(_LABEL_WRAPPING))
    return start, max(start, end)


def _classified(
    *,
    content: str,
    parsed: dict[str, Any] | None,
    labels: tuple[str, ...],
    json_mode: bool,
    token_logprobs: list[tuple[str, float]] | None,
    invalid: Callable[[str], ProcessingError],
) -> tuple[dict[str, Any], float | None]:
    """The label a classify answer names, and the confidence in it."""
    self_reported: float | None = None
    if parsed is not None:
        answer = parsed.get("label")
        if not isinstance(answer, str):
            raise invalid(f'The model\'s JSON has no "label" string: {_snippet(content)}')
        match = _LABEL_VALUE.search(content)
        span = match.span(1) if match else None
        self_reported = _self_reported(parsed)
    elif json_mode:
        raise invalid(f"The model's output is not a JSON object: {_snippet(content)}")
    else:
        span = _bare_span(content)
        answer = content[span[0] : span[1]]
    by_folded = {label.casefold(): label for label in labels}
    label = by_folded.get(answer.strip().casefold()) if labels else answer.strip()
    if label is None:
        raise invalid(
            f"The model answered {answer.strip()!r}, which is not one of the labels "
            f"({', '.join(labels)})."
        )
    confidence = None
    if token_logprobs is not None and span is not None:
        confidence = _label_probability(content, span, token_logprobs)
    if confidence is None:
        confidence = self_reported
    return {"label": label}, confidence
