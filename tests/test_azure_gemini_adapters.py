"""What Azure OpenAI and Gemini document beyond the shared adapter suite (tests/test_adapters.py):
paths and versions, headers, retry hints, filters, safety, usage, thought signatures."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import msgspec
import pytest

from modelrouter.config import ProviderSettings
from modelrouter.events import Chunk, Done, Event, Finish, ToolCallDelta, UpstreamFailure, Usage
from modelrouter.providers import ADAPTERS, Adapter
from modelrouter.providers.gemini_request import FOREIGN_SIGNATURE, SIGNATURE_MARK
from modelrouter.schemas import ChatRequest, chat_request_decoder

KEY = "test-key-0123456789abcdef"


def adapter(kind: str, base_url: str = "https://res.example.com", **extra: Any) -> Adapter:
    settings = ProviderSettings(
        name=kind,
        kind=kind,  # type: ignore[arg-type]
        base_url=base_url,
        model="configured",
        api_key=KEY,
        rate_limit=0,
        **extra,
    )
    return ADAPTERS[kind](settings)


def request_of(**fields: Any) -> ChatRequest:
    body = {"messages": [{"role": "user", "content": "hi"}], **fields}
    return chat_request_decoder.decode(msgspec.json.encode(body))


def headers(**values: str) -> Any:
    return lambda name: values.get(name.lower().replace("-", "_"))


# --- Azure OpenAI ------------------------------------------------------------------------------


def test_azure_names_the_deployment_and_the_default_version_in_the_path() -> None:
    azure = adapter("azure")
    assert azure.model_in_path
    assert azure.url == "https://res.example.com/openai/deployments"
    assert azure.path("gpt-4o-prod", stream=True) == (
        "/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    )


def test_azure_takes_the_deployment_s_api_version() -> None:
    azure = adapter("azure", api_version="2025-04-01-preview")
    assert azure.path("d", stream=False) == "/d/chat/completions?api-version=2025-04-01-preview"


def test_azure_v1_uses_the_v1_path_with_no_version_and_the_deployment_in_the_body() -> None:
    azure = adapter("azure", api_version="v1")
    assert not azure.model_in_path
    assert azure.url == "https://res.example.com/openai/v1/chat/completions"
    assert azure.path("gpt-4o-prod", stream=False) == ""
    assert json.loads(azure.map_request(request_of(), "gpt-4o-prod", stream=False))["model"] == (
        "gpt-4o-prod"
    )


@pytest.mark.parametrize("kind", ["azure", "gemini"])
def test_a_model_name_cannot_break_out_of_the_request_line(kind: str) -> None:
    path = adapter(kind).path("a b/../c?x=1#y\r\nHost: evil", stream=True)
    assert not re.search(r"[\s\r\n#]", path)
    assert "/../" not in path
    assert path.count("?") <= 1


def test_azure_sends_the_key_in_api_key_and_no_bearer_token() -> None:
    sent = adapter("azure").headers
    assert sent["api-key"] == KEY
    assert "Authorization" not in sent


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ({"retry_after_ms": "1500", "retry_after": "2"}, 1.5),
        ({"retry_after_ms": "soon", "retry_after": "2"}, 2.0),
        ({"retry_after_ms": "inf", "retry_after": "2"}, 2.0),
        ({"retry_after": "7"}, 7.0),
        ({}, None),
    ],
)
def test_azure_prefers_retry_after_ms_to_retry_after(
    given: dict[str, str], seconds: float | None
) -> None:
    assert adapter("azure").retry_after(headers(**given)) == seconds


def test_other_adapters_read_retry_after_only() -> None:
    given = headers(retry_after_ms="1500", retry_after="2")
    assert adapter("openai").retry_after(given) == 2.0


def test_azure_prompt_rejected_by_its_content_filter_is_the_client_s_400() -> None:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
    }
    failure = adapter("azure").failure(400, msgspec.json.encode(body), None)
    assert (failure.reason, failure.status) == (None, 400)
    assert "filtered" in failure.message


def test_azure_404_other_than_a_missing_deployment_keeps_the_common_class() -> None:
    body = msgspec.json.encode({"error": {"code": "404", "message": "Resource not found"}})
    failure = adapter("azure").failure(404, body, None)
    assert (failure.reason, failure.status) == (None, 404)


# --- Gemini: paths and request ------------------------------------------------------------------


def test_gemini_asks_the_model_s_method_in_the_path() -> None:
    gemini = adapter("gemini", "https://generativelanguage.googleapis.com")
    assert gemini.url == "https://generativelanguage.googleapis.com/v1beta/models"
    assert gemini.path("gemini-2.5-flash", stream=False) == "/gemini-2.5-flash:generateContent"
    assert gemini.path("models/gemini-2.5-flash", stream=True) == (
        "/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert gemini.headers["x-goog-api-key"] == KEY


def gemini_body(**fields: Any) -> dict[str, Any]:
    return json.loads(adapter("gemini").map_request(request_of(**fields), "m", stream=True))


def test_gemini_keeps_each_leading_system_message_as_a_part_of_system_instruction() -> None:
    turns = [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "answer in French"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {"role": "user", "content": "ça va ?"},
    ]
    body = gemini_body(messages=turns)
    assert body["systemInstruction"] == {
        "parts": [{"text": "be brief"}, {"text": "answer in French"}]
    }
    assert [turn["role"] for turn in body["contents"]] == ["user", "model", "user"]


def test_gemini_puts_sampling_and_options_in_generation_config() -> None:
    body = gemini_body(
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    )
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


def test_gemini_json_mode_asks_for_json_without_a_schema() -> None:
    config = gemini_body(response_format={"type": "json_object"})["generationConfig"]
    assert config == {"responseMimeType": "application/json"}


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", None),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_gemini_tool_choice_becomes_a_function_calling_mode(choice: Any, config: Any) -> None:
    body = gemini_body(tools=[TOOL], tool_choice=choice)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "get_weather", "parametersJsonSchema": {"type": "object"}}
            ]
        }
    ]
    assert body.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


def refused_by_gemini(**fields: Any) -> list[str]:
    return [refusal.param for refusal in adapter("gemini").unsupported(request_of(**fields))]


def test_gemini_refuses_what_it_cannot_honour_or_would_reject() -> None:
    assert refused_by_gemini(tools=[TOOL], parallel_tool_calls=False) == ["parallel_tool_calls"]
    assert refused_by_gemini(stop=["a", "b", "c", "d", "e", "f"]) == ["stop"]
    assert refused_by_gemini(stop=["a", "b", "c", "d", "e"]) == []
    bad_name = {"type": "function", "function": {"name": "7up"}}
    assert refused_by_gemini(tools=[bad_name]) == ["tools"]
    orphan = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "c9", "content": "x"},
    ]
    assert refused_by_gemini(messages=orphan) == ["messages"]


def test_gemini_sends_the_results_of_one_turn_s_calls_in_one_user_turn() -> None:
    calls = [
        {"id": f"c{i}", "function": {"name": name, "arguments": "{}"}}
        for i, name in enumerate(("get_weather", "get_time"))
    ]
    turns = [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
    ]
    contents = gemini_body(messages=turns, tools=[TOOL])["contents"]
    assert [turn["role"] for turn in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0] == {"text": "Let me look."}
    assert [part["functionResponse"]["name"] for part in contents[2]["parts"]] == [
        "get_time",
        "get_weather",
    ]


# --- Gemini: thought signatures ride in the tool call ids ---------------------------------------

SIGNATURE = base64.b64encode(b"\xfb\xff signed by the model \xfe").decode()  # has + / =


def gemini_call(name: str, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": {"q": 1}}}
    return part if signature is None else {**part, "thoughtSignature": signature}


def answer(*parts: dict[str, Any], finish: str = "STOP") -> bytes:
    candidate = {"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}
    return msgspec.json.encode({"candidates": [candidate], "responseId": "r-1"})


def sent_back(calls: list[ToolCallDelta]) -> list[dict[str, Any]]:
    """The model turn Gemini gets when a client sends `calls` back with their results."""
    tool_calls = [
        {"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in calls
    ]
    turns = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": tool_calls},
        *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls),
    ]
    parts: list[dict[str, Any]] = gemini_body(messages=turns, tools=[TOOL])["contents"][1]["parts"]
    return parts


def test_a_signed_call_gets_its_signature_back_exactly() -> None:
    calls = adapter("gemini").map_response(answer(gemini_call("f", SIGNATURE))).tool_calls
    assert SIGNATURE_MARK in str(calls[0].id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", str(calls[0].id))  # a valid id for Anthropic too
    assert sent_back(calls)[0]["thoughtSignature"] == SIGNATURE


def test_in_parallel_calls_only_the_signed_first_one_carries_a_signature() -> None:
    body = answer(gemini_call("f", SIGNATURE), gemini_call("g"))
    parts = sent_back(adapter("gemini").map_response(body).tool_calls)
    assert [part.get("thoughtSignature") for part in parts] == [SIGNATURE, None]


def test_calls_that_gemini_did_not_sign_get_the_documented_placeholder_once() -> None:
    foreign = [ToolCallDelta(i, f"toolu_{i}", name, "{}") for i, name in enumerate("fg")]
    parts = sent_back(foreign)
    assert [part.get("thoughtSignature") for part in parts] == [FOREIGN_SIGNATURE, None]


def test_a_tampered_signature_is_not_sent() -> None:
    forged = [ToolCallDelta(0, f"call_1{SIGNATURE_MARK}not base64!", "f", "{}")]
    assert sent_back(forged)[0]["thoughtSignature"] == FOREIGN_SIGNATURE


# --- Gemini: responses ---------------------------------------------------------------------------


def events(payloads: list[bytes]) -> list[Event]:
    mapper = adapter("gemini").stream_mapper()
    return [event for payload in payloads for event in mapper(payload)]


def test_calls_streamed_in_separate_chunks_are_numbered_across_the_stream() -> None:
    streamed = events([answer(gemini_call("f"), finish=""), answer(gemini_call("g"))])
    calls = [event for event in streamed if isinstance(event, ToolCallDelta)]
    assert [(call.index, call.name) for call in calls] == [(0, "f"), (1, "g")]
    assert len({call.id for call in calls}) == 2
    assert streamed[-2:] == [Finish("tool_calls"), Done("tool_calls")]


def test_thought_summaries_are_not_part_of_the_answer() -> None:
    body = answer({"text": "let me think", "thought": True}, {"text": "42"})
    assert adapter("gemini").map_response(body).text == "42"


def test_usage_counts_thoughts_as_output_and_cached_input_once() -> None:
    usage = {
        "promptTokenCount": 100,  # holds the 60 cached ones
        "cachedContentTokenCount": 60,
        "toolUsePromptTokenCount": 5,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 155,
    }
    body = json.loads(answer({"text": "x"}))
    completion = adapter("gemini").map_response(
        msgspec.json.encode({**body, "usageMetadata": usage})
    )
    assert completion.usage == Usage(105, 50, cached_input=60, reasoning=30)
    assert (completion.usage.input, completion.usage.output) == (45, 20)


def test_running_usage_in_every_chunk_ends_as_the_last_figures() -> None:
    def chunk(text: str, done: int, finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if finish:
            candidate["finishReason"] = finish
        usage = {"promptTokenCount": 9, "candidatesTokenCount": done}
        return msgspec.json.encode({"candidates": [candidate], "usageMetadata": usage})

    streamed = events([chunk("a", 1), chunk("b", 2), chunk("c", 3, "STOP")])
    merged = Usage()
    for usage in (event for event in streamed if isinstance(event, Usage)):
        merged = merged.merge(usage)
    assert merged == Usage(9, 3)


def test_a_stream_that_never_says_why_it_stopped_has_no_end() -> None:
    streamed = events([answer({"text": "a"}, finish=""), answer({"text": "b"}, finish="")])
    assert [event for event in streamed if isinstance(event, Chunk)] == [Chunk("a"), Chunk("b")]
    assert not any(isinstance(event, Done) for event in streamed)


def test_an_answer_stopped_by_safety_is_empty_and_content_filtered() -> None:
    body = msgspec.json.encode({"candidates": [{"finishReason": "SAFETY", "index": 0}]})
    completion = adapter("gemini").map_response(body)
    assert (completion.text, completion.finish_reason) == ("", "content_filter")


BLOCKED = msgspec.json.encode(
    {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
)


def test_a_blocked_prompt_is_the_client_s_400_whole_or_streamed() -> None:
    gemini = adapter("gemini")
    for mapper in (gemini.map_response, gemini.stream_mapper()):
        with pytest.raises(UpstreamFailure) as caught:
            mapper(BLOCKED)
        assert (caught.value.reason, caught.value.status) == (None, 400)
        assert "blocked" in caught.value.message
        assert "PROHIBITED_CONTENT" in caught.value.message


# --- Gemini: errors ------------------------------------------------------------------------------


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error = {"code": code, "message": message, "status": status, "details": list(details)}
    return msgspec.json.encode({"error": error})


INVALID_KEY = google_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, INVALID_KEY),
        (400, google_error(400, "FAILED_PRECONDITION", "Gemini API free tier is not available")),
        (402, google_error(402, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted.")),
    ],
    ids=["invalid-key", "no-free-tier-here", "credit-spent"],
)
def test_gemini_configuration_faults_are_auth_errors(status: int, body: bytes) -> None:
    failure = adapter("gemini").failure(status, body, None)
    assert (failure.reason, failure.status) == ("auth_error", status)


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}


def test_a_gemini_429_waits_as_its_retry_info_says_unless_a_header_does() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "quota", RETRY_INFO)
    gemini = adapter("gemini")
    assert gemini.failure(429, body, None).retry_after == 37.0
    assert gemini.failure(429, body, 5.0).retry_after == 5.0
    assert gemini.failure(429, body, None).reason == "rate_limited"
