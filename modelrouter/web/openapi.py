"""`GET /openapi.json`: an OpenAPI 3.1 document of the whole HTTP API, from the msgspec types.

The seed's routes use the request and response types the handlers decode and encode
(`schemas.py`). The OpenAI routes, `/health` and `/ready` are written as dicts by their
handlers; their shapes are declared here as msgspec types, and the fuzz test (schemathesis, in
the suite) checks every answer against them, so a handler that drifts from its document fails.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from modelrouter import __version__
from modelrouter.history import MAX_LIMIT, MAX_TEXT
from modelrouter.schemas import (
    MAX_MESSAGES,
    ChatRequest,
    ChatResponse,
    ErrorEnvelope,
    FunctionCall,
    ToolCall,
)
from modelrouter.tenants import CreatedKey, KeyInfo, KeyPage, KeyPatch, NewKey, Rotation
from modelrouter.web import openapi_more
from modelrouter.web.console import ErrorList, Overview
from modelrouter.web.health import Health, Ready
from modelrouter.web.history import HistoryPage
from modelrouter.web.reload import ReloadOutcome
from modelrouter.web.runtime import SETTINGS
from modelrouter.web.spend import GROUP_BYS, KeySpendReport, SpendReport

# -- OpenAI's shapes, as /v1/chat/completions reads and writes them ----------------------------


class TextPart(msgspec.Struct, frozen=True):
    type: Literal["text"]
    text: str


class OpenAIMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_usage: bool | None = None


class CompletionRequest(ChatRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/chat/completions`: the seed's request (OpenAI's parameters among them: one
    that no enabled provider can honour is a 400 naming it), with OpenAI's message forms and
    its few parameters of its own; any other parameter is a 400."""

    # OpenAI's message forms (`developer`, content parts), normalised to the seed's on the way in.
    messages: Annotated[  # type: ignore[assignment]
        list[OpenAIMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)
    ]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    logprobs: Literal[False] | None = None
    store: Literal[False] | None = None


class PromptDetails(msgspec.Struct, frozen=True):
    cached_tokens: int


class CompletionDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails | None = None  # when the provider read its cache
    completion_tokens_details: CompletionDetails | None = None  # when the model reasoned
    cost_usd: (
        Annotated[
            float,
            msgspec.Meta(
                description="modelrouter's: the usage at the price table's prices (docs/cost.md)"
            ),
        ]
        | None
    ) = None
    estimated: (
        Annotated[
            bool,
            msgspec.Meta(description="counted by the gateway: the provider did not give it whole"),
        ]
        | None
    ) = None


class AnswerToolCall(msgspec.Struct, frozen=True):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AnswerMessage(msgspec.Struct, frozen=True):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    tool_calls: list[AnswerToolCall] | None = None


class Choice(msgspec.Struct, frozen=True):
    index: int
    message: AnswerMessage
    logprobs: None
    finish_reason: str


class ChatCompletion(msgspec.Struct, frozen=True):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str  # provider/model: routes back to the same place
    provider: str | None
    choices: list[Choice]
    usage: Usage


class OpenAIError(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(msgspec.Struct, frozen=True):
    error: OpenAIError


class Model(msgspec.Struct, frozen=True):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    embeddings: Literal[True] | None = None  # modelrouter's: the model embeds (EMBEDDING_MODELS)


class ModelList(msgspec.Struct, frozen=True):
    object: Literal["list"]
    data: list[Model]


# -- operations ---------------------------------------------------------------------------------


_TYPES: tuple[Any, ...] = (
    SpendReport,
    Overview,
    ErrorList,
    ChatRequest,
    ChatResponse,
    ErrorEnvelope,
    CompletionRequest,
    ChatCompletion,
    OpenAIErrorEnvelope,
    ModelList,
    Model,
    Health,
    Ready,
    HistoryPage,
    NewKey,
    KeyPatch,
    Rotation,
    KeyInfo,
    CreatedKey,
    KeyPage,
    ReloadOutcome,
    *openapi_more.TYPES,
    SpendReport,
    KeySpendReport,
)
_REF = "#/components/schemas/{name}"
SEED_ERRORS = (400, 401, 404, 408, 413, 429, 502, 503, 504)
OPENAI_ERRORS = SEED_ERRORS
REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request's id: the client's when it is sane, else a new one",
        "required": True,
        "schema": {"type": "string"},
    }
}
ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "An id to carry through the logs (letters, digits, `._:-`, up to 128)",
    "schema": {"type": "string"},
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=ref)}}}


def _answer(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": REQUEST_ID, "content": content}


def _errors(statuses: tuple[int, ...], envelope: str) -> dict[str, Any]:
    return {str(s): _answer(f"error {s}", _json(envelope)) for s in statuses}


def _path_parameter(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


def _query_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _history_parameters() -> list[dict[str, Any]]:
    """`GET /v1/history`'s filters (a value outside these rules is a 400 naming it)."""
    time = "ISO 8601 with a zone (e.g. Z), or epoch seconds"
    text = {"type": "string", "maxLength": MAX_TEXT}
    return [
        _query_parameter("since", f"records at or after this time: {time}", type="string"),
        _query_parameter("until", f"records before this time: {time}", type="string"),
        _query_parameter("provider", "this provider's records only (no NUL)", **text),
        _query_parameter("model", "this model's records only (no NUL)", **text),
        _query_parameter(
            "status", "this HTTP status only", type="integer", minimum=100, maximum=599
        ),
        _query_parameter("limit", "records per page", type="integer", minimum=1, maximum=MAX_LIMIT),
        _query_parameter("cursor", "the previous page's `next_cursor`", type="string"),
    ]


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [ID_PARAMETER, *(parameters or [])],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if public:
        operation["security"] = []
    return operation


ADMIN_SECURITY: list[dict[str, list[str]]] = [{"admin": []}]
ADMIN_ERRORS = (400, 401, 404, 503)  # 404: also every /admin path while ADMIN_API_KEY is unset


def _admin(operation: dict[str, Any], *, body_required: bool = True) -> dict[str, Any]:
    """An /admin operation: opened by a key of ADMIN_API_KEY, and by nothing else."""
    operation["security"] = ADMIN_SECURITY
    if "requestBody" in operation:
        operation["requestBody"]["required"] = body_required
    return operation


def _spend_parameters(*, group_by: bool) -> list[dict[str, Any]]:
    """`from` and `to` (ISO 8601 dates or times, UTC without an offset), and `group_by`."""
    when = {"type": "string", "description": "2026-12-01 or 2026-12-01T08:00:00Z"}
    found = [
        {"name": name, "in": "query", "required": False, "schema": when} for name in ("from", "to")
    ]
    if group_by:
        schema: dict[str, Any] = {"type": "string", "enum": list(GROUP_BYS), "default": "key"}
        found.append({"name": "group_by", "in": "query", "required": False, "schema": schema})
    return found


def _admin_paths() -> dict[str, Any]:
    key_id = _path_parameter("key_id")
    errors = _errors(ADMIN_ERRORS, "ErrorEnvelope")
    conflict = _errors((409,), "ErrorEnvelope")
    too_large = _errors((413,), "ErrorEnvelope")
    info = {"200": _answer("the key", _json("KeyInfo"))}
    query = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "team", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    read_errors = _errors((401, 404), "ErrorEnvelope")
    return {
        "/admin/spend": {
            "get": _admin(
                _operation(
                    "Spend and requests in [from, to), grouped by key, team, provider, model "
                    "or day; by key, with each key's budget, period spend and reset",
                    {
                        "200": _answer(
                            "the groups, largest spend first (by key: KeySpendReport)",
                            {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": _REF.format(name="KeySpendReport")},
                                            {"$ref": _REF.format(name="SpendReport")},
                                        ]
                                    }
                                }
                            },
                        )
                    }
                    | errors,
                    parameters=_spend_parameters(group_by=True),
                )
            )
        },
        "/admin/overview": {
            "get": _admin(
                _operation(
                    "Deployments (state, in flight, rate budget, time to first byte and error "
                    "rate over 5 and 60 minutes), cache and history: the console's overview",
                    {"200": _answer("the overview", _json("Overview"))} | read_errors,
                )
            )
        },
        "/admin/errors": {
            "get": _admin(
                _operation(
                    "The last 50 failed requests, newest first (what and where: no message, "
                    "prompt or key): the fleet's with Redis, else this replica's (`scope`)",
                    {"200": _answer("the errors", _json("ErrorList"))} | read_errors,
                )
            )
        },
        "/admin/keys": {
            "post": _admin(
                _operation(
                    "Create a virtual key; its secret is in this answer only",
                    {"201": _answer("the key and its secret", _json("CreatedKey"))}
                    | errors
                    | conflict
                    | too_large,
                    body="NewKey",
                )
            ),
            "get": _admin(
                _operation(
                    "The virtual keys, newest first, in pages (never a secret)",
                    {"200": _answer("a page", _json("KeyPage"))} | errors,
                    parameters=query,
                )
            ),
        },
        "/admin/keys/{key_id}": {
            "get": _admin(_operation("One virtual key", info | errors, parameters=[key_id])),
            "patch": _admin(
                _operation(
                    "Change a key's settings (the fields given; null clears one)",
                    info | errors | conflict | too_large,
                    body="KeyPatch",
                    parameters=[key_id],
                )
            ),
            "delete": _admin(
                _operation(
                    "Revoke a key (its row stays, for history and spend)",
                    info | errors,
                    parameters=[key_id],
                )
            ),
        },
        "/admin/reload": {
            "post": _admin(
                _operation(
                    "Reload the routing file (MODELROUTER_CONFIG): new requests take it, those "
                    "in flight finish where they started; a file with problems is refused (422, "
                    "every problem with its line) and the running one stays",
                    {
                        "200": _answer("reloaded: the deployments by fate", _json("ReloadOutcome")),
                        "202": _answer(
                            "serve --workers: the file is good, every worker was told",
                            _json("ReloadOutcome"),
                        ),
                    }
                    | _errors((401, 404, 422), "ErrorEnvelope"),
                )
            )
        },
        "/admin/keys/{key_id}/rotate": {
            "post": _admin(
                _operation(
                    "A new secret for the key, in this answer only; the old one works "
                    "`grace_seconds` more",
                    {"200": _answer("the key and its new secret", _json("CreatedKey"))}
                    | errors
                    | conflict
                    | too_large,
                    body="Rotation",
                    parameters=[key_id],
                ),
                body_required=False,
            )
        },
    }


def _paths() -> dict[str, Any]:
    # A stream's schema describes each of its events (`message` events, an `error` one).
    event = {
        "type": "object",
        "properties": {"event": {"enum": ["message", "error"]}, "data": {"type": "string"}},
        "required": ["data"],
    }
    sse = {"text/event-stream": {"schema": event}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    seed_errors = _errors(SEED_ERRORS, "ErrorEnvelope")
    openai_errors = _errors(OPENAI_ERRORS, "OpenAIErrorEnvelope")
    completion = _json("ChatCompletion") | sse
    request_id_parameter = _path_parameter("request_id", maxLength=MAX_TEXT)
    # 503: the history database does not answer (retry); 404: history off (no DATABASE_URL).
    history_errors = _errors((400, 401, 404, 503), "OpenAIErrorEnvelope")
    model_parameter = _path_parameter("model")
    return {
        "/chat": {
            "post": _operation(
                "The whole answer as JSON",
                {"200": _answer("the answer", _json("ChatResponse"))} | seed_errors,
                body="ChatRequest",
            )
        },
        "/stream": {
            "post": _operation(
                "The answer as Server-Sent Events: `data: <text>` per chunk, then "
                "`data: [DONE]`, or an `event: error`",
                {"200": _answer("the stream", sse)} | seed_errors,
                body="ChatRequest",
            )
        },
        "/v1/chat/completions": {
            "post": _operation(
                "OpenAI's Chat Completions (a stream when `stream` is true)",
                {"200": _answer("the completion", completion)} | openai_errors,
                body="CompletionRequest",
            )
        },
        "/v1/models": {
            "get": _operation(
                "The models served",
                {"200": _answer("the list", _json("ModelList"))}
                | _errors((401,), "OpenAIErrorEnvelope"),
            )
        },
        "/v1/models/{model}": {
            "get": _operation(
                "One model served",
                {"200": _answer("the model", _json("Model"))}
                | _errors((401, 404), "OpenAIErrorEnvelope"),
                parameters=[model_parameter],
            )
        },
        "/v1/history": {
            "get": _operation(
                "This client key's finished requests, newest first (DATABASE_URL)",
                {"200": _answer("a page", _json("HistoryPage"))} | history_errors,
                parameters=_history_parameters(),
            )
        },
        "/v1/history/{request_id}": {
            "get": _operation(
                "One finished request of this client key's (DATABASE_URL)",
                {"200": _answer("the record", _json("HistoryRecord"))} | history_errors,
                parameters=[request_id_parameter],
            )
        },
        "/v1/spend": {
            "get": _operation(
                "This client key's spend in [from, to), with its budget (DATABASE_URL)",
                {"200": _answer("one row", _json("KeySpendReport"))} | history_errors,
                parameters=_spend_parameters(group_by=False),
            )
        },
        "/health": {
            "get": _operation(
                "Liveness, each provider's state",
                {"200": _answer("ok", _json("Health"))},
                public=True,
            )
        },
        "/ready": {
            "get": _operation(
                "Whether this replica takes traffic",
                {
                    "200": _answer("ready", _json("Ready")),
                    "503": _answer("not ready", _json("Ready")),
                },
                public=True,
            )
        },
        "/metrics": {
            "get": _operation("Prometheus metrics", {"200": _answer("the page", text)}, public=True)
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                {
                    "200": _answer(
                        "OpenAPI 3.1", {"application/json": {"schema": {"type": "object"}}}
                    )
                },
                public=True,
            )
        },
    } | _admin_paths()


def openapi_document(*, auth: bool) -> dict[str, Any]:
    """The document; `auth`: whether the API routes need `Authorization: Bearer <API_KEY>`."""
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "modelrouter",
            "version": __version__,
            "description": "An LLM gateway: the seed's /chat and /stream, OpenAI's "
            "/v1/chat/completions, /v1/embeddings and /v1/models, Anthropic's /v1/messages, "
            "and the operations routes.",
        },
        "paths": _paths() | openapi_more.paths(_operation, _answer, _json, _errors, OPENAI_ERRORS),
        "components": {"schemas": components},
    }
    schemes: dict[str, Any] = {
        "admin": {"type": "http", "scheme": "bearer", "description": "a key of ADMIN_API_KEY"}
    }
    if auth:
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        document["security"] = [{"bearer": []}]
    else:  # no API_KEY: nothing to send (loopback only), but /admin still needs its key
        for path in document["paths"].values():
            for operation in path.values():
                if operation.get("security") != ADMIN_SECURITY:
                    operation.pop("security", None)
    document["components"]["securitySchemes"] = schemes
    return document


@functools.cache
def _encoded(auth: bool) -> bytes:
    return msgspec.json.encode(openapi_document(auth=auth))


async def document(request: web.Request) -> web.Response:
    """`GET /openapi.json` (no key needed: it holds nothing but the API's shape)."""
    body = _encoded(request.app[SETTINGS].auth_enabled)
    return web.Response(body=body, content_type="application/json")
