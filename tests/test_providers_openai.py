"""The OpenAI-compatible provider against real HTTP servers on loopback.

Faults, scripted replies and request inspection come from LLMock (its `llmock` pytest fixture
runs a real OpenAI-compatible server). LLMock answers without log-probabilities, so the tests of
confidence from logprobs, exact usage and concurrency use ScriptedServer below: a small real
server on 127.0.0.1 that replies from a script."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.providers import (
    CallRequest,
    CallResult,
    ConfigurationError,
    ProcessingError,
    ProviderLimitError,
    ProviderSettings,
    TransientError,
    provider_for,
)


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop
    running in the main thread for the whole session, and asyncio.run will not nest in it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


KEY_ENV = "SLUICE_TEST_OPENAI_API_KEY"
KEY = "sk-test-d0-not-print-me-4242"
LABELS = ("billing", "shipping", "account")
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["total", "currency"],
}


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def settings_for(
    base_url: str, *, timeout: float = 5.0, max_concurrency: int = 4, key_env: str = KEY_ENV
) -> ProviderSettings:
    return ProviderSettings(
        kind="openai",
        base_url=base_url,
        api_key_env=key_env,
        timeout_seconds=timeout,
        max_concurrency=max_concurrency,
    )


def call(settings: ProviderSettings, request: CallRequest) -> CallResult:
    async def call_once() -> CallResult:
        async with provider_for(kind="openai", settings=settings) as provider:
            return await provider.call(request)

    return run(call_once())


def classify_request(**parameters: Any) -> CallRequest:
    return CallRequest(
        prompt="Which team handles this ticket? My refund never came.",
        model="test-model",
        parameters=parameters,
        labels=LABELS,
    )


def extract_request(**parameters: Any) -> CallRequest:
    return CallRequest(
        prompt="Extract the total and currency from: Invoice 17, total 12.50 EUR.",
        model="test-model",
        parameters=parameters,
        output_schema=INVOICE_SCHEMA,
    )


# -- A scripted real server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any]
    status: int = 200
    delay: float = 0.0


def completion(
    content: str | None,
    *,
    tokens: list[tuple[str, float]] | None = None,
    usage: tuple[int, int] | None = (321, 17),
    finish_reason: str = "stop",
) -> dict[str, Any]:
    logprobs = None
    if tokens is not None:
        logprobs = {
            "content": [
                {"token": token, "logprob": logprob, "bytes": None, "top_logprobs": []}
                for token, logprob in tokens
            ]
        }
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }
        ],
    }
    if usage is not None:
        prompt_tokens, completion_tokens = usage
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


@dataclass
class ScriptedServer:
    """Answers POST /v1/chat/completions with the next scripted Reply, in real HTTP."""

    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(payload)
                    reply = server.replies.popleft() if server.replies else None
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if reply is None or self.path != "/v1/chat/completions":
                        reply = Reply({"error": {"message": "nothing scripted"}}, status=404)
                    time.sleep(reply.delay)
                    data = json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- Replies ------------------------------------------------------------------------------------


def test_a_json_reply_becomes_the_output_with_the_servers_token_counts(llmock):
    llmock.reply('{"total": 12.5, "currency": "EUR"}')
    result = call(settings_for(llmock.base_url()), extract_request(temperature=0, seed=7))
    assert result.output == {"total": 12.5, "currency": "EUR"}
    assert result.input_tokens > 0
    assert result.output_tokens > 0
    assert result.raw == '{"total": 12.5, "currency": "EUR"}'
    assert result.confidence is None
    assert not result.simulated
    assert result.latency_ms > 0


def test_it_asks_for_json_and_passes_the_prompt_versions_parameters_through(llmock):
    llmock.reply('{"total": 1, "currency": "EUR"}')
    parameters = {"temperature": 0.2, "max_tokens": 300, "top_p": 0.9, "seed": 7, "colour": "red"}
    call(settings_for(llmock.base_url()), extract_request(**parameters))
    body = llmock.last_request.body
    assert body["response_format"] == {"type": "json_object"}
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (
        0.2,
        300,
        0.9,
        7,
    )
    assert "colour" not in body
    assert "logprobs" not in body
    assert body["messages"][-1] == {"role": "user", "content": extract_request().prompt}
    assert "JSON" in body["messages"][0]["content"]


def test_the_server_reports_exact_token_counts_through_usage(scripted):
    scripted.script(Reply(completion('{"total": 3, "currency": "USD"}', usage=(321, 17))))
    result = call(settings_for(scripted.base_url), extract_request())
    assert (result.input_tokens, result.output_tokens) == (321, 17)


def test_a_server_that_reports_no_usage_gets_an_estimate_rather_than_a_free_call(scripted):
    scripted.script(Reply(completion('{"total": 3, "currency": "USD"}', usage=None)))
    result = call(settings_for(scripted.base_url), extract_request())
    assert result.input_tokens == math.ceil(len(extract_request().prompt) / 4)
    assert result.output_tokens > 0


def test_free_text_without_an_output_schema_is_kept_under_text(llmock):
    llmock.reply("A short, friendly summary.")
    request = CallRequest(prompt="Summarise the ticket.", model="test-model")
    result = call(settings_for(llmock.base_url()), request)
    assert result.output == {"text": "A short, friendly summary."}
    assert "response_format" not in llmock.last_request.body


def test_a_json_answer_fenced_in_markdown_is_still_read(llmock):
    llmock.reply('```json\n{"total": 4, "currency": "GBP"}\n```')
    result = call(settings_for(llmock.base_url()), extract_request())
    assert result.output == {"total": 4, "currency": "GBP"}


def test_invalid_json_is_a_processing_error_quoting_the_start_of_the_output(llmock):
    garbage = "Sure! The total is twelve euros and fifty cents. " * 10
    llmock.reply(garbage)
    with pytest.raises(ProcessingError) as caught:
        call(settings_for(llmock.base_url()), extract_request())
    assert "not a JSON object" in caught.value.message
    assert garbage[:200] in caught.value.message
    assert garbage[:201] not in caught.value.message
    assert caught.value.raw == garbage
    assert caught.value.input_tokens > 0


# -- Classify and confidence --------------------------------------------------------------------


def test_classify_asks_for_logprobs(llmock):
    llmock.reply("billing")
    call(settings_for(llmock.base_url()), classify_request())
    assert llmock.last_request.body["logprobs"] is True


def test_a_prompt_version_can_turn_logprobs_off_for_servers_that_refuse_them(llmock):
    llmock.reply("billing")
    result = call(settings_for(llmock.base_url()), classify_request(logprobs=False))
    assert "logprobs" not in llmock.last_request.body
    assert result.output == {"label": "billing"}
    assert result.confidence is None


def test_a_generate_step_can_ask_for_logprobs(llmock):
    llmock.reply('{"total": 1, "currency": "EUR"}')
    call(settings_for(llmock.base_url()), extract_request(logprobs=True))
    assert llmock.last_request.body["logprobs"] is True


def test_classify_confidence_is_the_joint_probability_of_the_label_tokens(scripted):
    tokens = [('{"', -0.01), ("label", -0.02), ('":', -0.01), (' "', -0.05), ("bill", -0.1)]
    tokens += [("ing", -0.2), ('"}', -0.01)]
    scripted.script(Reply(completion('{"label": "billing"}', tokens=tokens)))
    result = call(settings_for(scripted.base_url), classify_request())
    assert result.output == {"label": "billing"}
    # Only "bill" and "ing" spell the label; the JSON around it says nothing about the choice.
    assert result.confidence == pytest.approx(math.exp(-0.1 - 0.2))


def test_a_bare_label_answer_gets_its_confidence_from_its_tokens(scripted):
    tokens = [("Sh", -0.3), ("ipping", -0.05), (".", -0.4)]
    scripted.script(Reply(completion("Shipping.", tokens=tokens)))
    result = call(settings_for(scripted.base_url), classify_request())
    assert result.output == {"label": "shipping"}
    assert result.confidence == pytest.approx(math.exp(-0.35))


def test_without_logprobs_a_self_reported_confidence_is_used(llmock):
    llmock.reply('{"label": "Account", "confidence": 0.62}')
    result = call(settings_for(llmock.base_url()), classify_request())
    assert result.output == {"label": "account"}
    assert result.confidence == 0.62


def test_tokens_that_do_not_spell_the_answer_fall_back_to_the_self_reported_confidence(scripted):
    tokens = [("something", -0.1), ("else", -0.1)]
    content = '{"label": "billing", "confidence": 0.9}'
    scripted.script(Reply(completion(content, tokens=tokens)))
    result = call(settings_for(scripted.base_url), classify_request())
    assert result.confidence == 0.9


def test_a_label_with_no_evidence_of_confidence_has_none(llmock):
    llmock.reply('{"label": "billing", "confidence": 87}')
    result = call(settings_for(llmock.base_url()), classify_request())
    assert result.output == {"label": "billing"}
    assert result.confidence is None


def test_an_answer_that_is_not_one_of_the_labels_is_a_processing_error(llmock):
    llmock.reply('{"label": "refunds"}')
    with pytest.raises(ProcessingError, match="'refunds', which is not one of the labels"):
        call(settings_for(llmock.base_url()), classify_request())


def test_a_refusal_is_a_processing_error(scripted):
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    scripted.script(Reply(body))
    with pytest.raises(ProcessingError, match=r"The model refused: I can.t help with that\."):
        call(settings_for(scripted.base_url), classify_request())


# -- Faults -------------------------------------------------------------------------------------


def test_a_rate_limit_is_transient_with_the_servers_retry_after(llmock):
    llmock.rate_limit(retry_after=2)
    with pytest.raises(TransientError) as caught:
        call(settings_for(llmock.base_url()), extract_request())
    assert caught.value.retry_after == 2.0
    assert "429" in caught.value.message
    # Retrying is the engine's job: the provider made exactly one attempt.
    assert len(llmock.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_transient(llmock, status):
    llmock.fail(status)
    with pytest.raises(TransientError, match=str(status)):
        call(settings_for(llmock.base_url()), extract_request())


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (402, "You exceeded your current quota, please check your plan.", None),
        (400, "Your credit balance is too low to access the API.", None),
        (403, "Billing hard limit has been reached.", None),
        (429, "You exceeded your current quota.", "insufficient_quota"),
    ],
)
def test_an_exhausted_quota_is_a_provider_limit_not_a_retry(llmock, status, message, code):
    llmock.fail(status, message=message, code=code)
    with pytest.raises(ProviderLimitError, match="quota or budget is exhausted"):
        call(settings_for(llmock.base_url()), extract_request())


def test_a_refused_key_is_a_configuration_error_naming_the_variable_never_the_key(llmock):
    llmock.fail(401, message=f"Incorrect API key provided: {KEY}.")
    with pytest.raises(ConfigurationError) as caught:
        call(settings_for(llmock.base_url()), extract_request())
    assert caught.value.message == f"The API key in ${KEY_ENV} was refused."
    # Workers log failures with their traceback: the key must not be in that either.
    logged = "".join(traceback.format_exception(caught.value))
    assert KEY_ENV in logged
    assert KEY not in logged


def test_a_key_echoed_in_another_error_is_redacted(llmock):
    llmock.fail(400, message=f"Bad request for key {KEY}")
    with pytest.raises(ProcessingError) as caught:
        call(settings_for(llmock.base_url()), extract_request())
    assert KEY not in caught.value.message
    assert "[redacted]" in caught.value.message


def test_a_missing_key_variable_is_a_configuration_error_naming_it(llmock, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigurationError, match=f"{KEY_ENV} is not set"):
        call(settings_for(llmock.base_url()), extract_request())
    assert llmock.requests == []


def test_a_server_without_keys_needs_no_variable(llmock):
    llmock.reply('{"total": 1, "currency": "EUR"}')
    result = call(settings_for(llmock.base_url(), key_env=""), extract_request())
    assert result.output["currency"] == "EUR"


def test_a_server_slower_than_the_timeout_is_transient(llmock):
    llmock.delay(3)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"within 0.3 s"):
        call(settings_for(llmock.base_url(), timeout=0.3), extract_request())
    assert time.monotonic() - started < 2.5


def test_a_server_that_is_not_listening_is_transient():
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TransientError, match="Could not reach"):
        call(settings_for(base_url), extract_request())


def test_a_bad_request_is_a_processing_error(llmock):
    llmock.context_overflow()
    with pytest.raises(ProcessingError, match="400"):
        call(settings_for(llmock.base_url()), extract_request())


def test_an_unknown_model_is_a_configuration_error(llmock):
    llmock.fail(404, message="The model `gpt-9` does not exist.")
    with pytest.raises(ConfigurationError, match="no such model"):
        call(settings_for(llmock.base_url()), extract_request())


def test_a_parameter_of_the_wrong_type_is_a_configuration_error(llmock):
    with pytest.raises(ConfigurationError, match='"temperature" must be a number'):
        call(settings_for(llmock.base_url()), extract_request(temperature="hot"))
    assert llmock.requests == []


# -- Concurrency --------------------------------------------------------------------------------


def test_no_more_calls_than_max_concurrency_are_in_flight_at_once(scripted):
    replies = [Reply(completion('{"total": 1, "currency": "EUR"}'), delay=0.15)] * 6
    scripted.script(*replies)

    async def call_six() -> list[CallResult]:
        settings = settings_for(scripted.base_url, max_concurrency=2)
        async with provider_for(kind="openai", settings=settings) as provider:
            return await asyncio.gather(*(provider.call(extract_request()) for _ in range(6)))

    results = run(call_six())
    assert len(results) == 6
    assert scripted.most_in_flight == 2
