"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's formats, so its SDKs work unchanged.

Auth, routing, fallback, the stream cap and metrics are those of `/chat` and `/stream` (shared in
`web.answers`); only reading the request and writing the answer differ. Errors are written in
OpenAI's shape by the front middleware (`web.errors.OpenAIErrors`) for every `/v1` path.
"""

from __future__ import annotations

import re

from aiohttp import web

from modelrouter.config import Settings
from modelrouter.errors import ApiError
from modelrouter.schemas import json_encoder
from modelrouter.tenants.keys import allowed
from modelrouter.web.answers import response_headers, serve_stream, whole_answer
from modelrouter.web.auth import authenticate
from modelrouter.web.body import read_body
from modelrouter.web.keylimits import model_allow
from modelrouter.web.openai_format import OpenAIStream, completion_body
from modelrouter.web.openai_request import parse_completion_request
from modelrouter.web.runtime import REQUEST_ID, RUNTIME, SUMMARY


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    await authenticate(request, runtime)
    parsed = parse_completion_request(await read_body(request, runtime.settings.max_body_bytes))
    request_id = request[REQUEST_ID]
    if parsed.stream:
        fmt = OpenAIStream(request_id, include_usage=parsed.include_usage, summary=request[SUMMARY])
        return await serve_stream(request, runtime, parsed.chat, fmt)
    answer = await whole_answer(request, runtime, parsed.chat)
    body = completion_body(
        answer.answering,
        request_id=request_id,
        text=answer.text,
        tool_calls=answer.tool_calls,
        usage=answer.usage,
        finish_reason=answer.finish_reason,
        cost=request[SUMMARY].cost,
    )
    return web.Response(
        body=body,
        content_type="application/json",
        headers=response_headers(request[SUMMARY], answer.answering),
    )


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*")


def _model_name(name: str) -> bool:
    """A provider's model name as providers write them (`meta-llama/llama-3.3-70b-instruct`,
    `qwen2.5:7b`): no empty, `.` or `..` path segment, at most 256 characters."""
    return len(name) <= 256 and _MODEL_NAME.fullmatch(name) is not None and ".." not in name


def served_models(settings: Settings) -> list[dict[str, object]]:
    """`auto`, the routing file's model groups, each enabled provider's configured model as
    `provider/model` (each group a file deployment serves as `deployment/group`), then the
    aliases; those EMBEDDING_MODELS names are marked `"embeddings": true`."""

    embedding = frozenset(settings.embedding_models)

    def entry(model_id: str, owner: str) -> dict[str, object]:
        found: dict[str, object] = {"id": model_id, "object": "model", "created": 0}
        found["owned_by"] = owner
        if model_id in embedding or model_id.partition("/")[2] in embedding:
            found["embeddings"] = True  # EMBEDDING_MODELS says this model embeds
        return found

    models = [entry("auto", "modelrouter")]
    models += [entry(group.name, "modelrouter") for group in settings.model_groups]
    for p in settings.providers:
        names = list(p.models) if p.from_file else [p.model]
        models += [entry(f"{p.name}/{name}", p.name) for name in names]
    models += [entry(alias.name, "modelrouter") for alias in settings.model_aliases]
    return models


def visible(
    models: list[dict[str, object]], settings: Settings, allow: tuple[str, ...]
) -> list[dict[str, object]]:
    """What a key with the allow-list `allow` may use: each `provider/model` it allows, each
    alias or model group allowed by name or with a target it allows, and `auto` when any
    enabled provider's model is allowed (it is the configured order, filtered)."""
    if not allow:
        return models
    targets = {
        alias.name: [f"{t.provider}/{t.model}" for t in alias.targets]
        for alias in settings.model_aliases
    }
    for group in settings.model_groups:
        targets[group.name] = [
            f"{p.name}/{model}"
            for p in settings.providers
            if p.from_file and group.name in p.models
            for model in (group.name, p.models[group.name])
        ]
    targets["auto"] = [f"{p.name}/{p.model}" for p in settings.providers if not p.from_file]

    def usable(name: str) -> bool:
        return allowed(allow, (name, name.partition("/")[2] or name))

    return [
        entry
        for entry in models
        if ((name := str(entry["id"])) != "auto" and usable(name))
        or any(usable(target) for target in targets.get(name, ()))
    ]


def named_in(
    allow: tuple[str, ...], settings: Settings, listed: set[str]
) -> list[dict[str, object]]:
    """The models an allow-list names exactly as `provider/model` (no pattern) of an enabled
    provider, not configured there: they route (as `GET /v1/models/{id}` says), so a key
    allowed only those sees them listed, not an empty list."""
    found: list[dict[str, object]] = []
    for name in allow:
        provider, _, model = name.partition("/")
        if name in listed or not _model_name(model) or any(c in name for c in "*?["):
            continue
        if settings.provider(provider) is not None:
            listed.add(name)
            found.append({"id": name, "object": "model", "created": 0, "owned_by": provider})
    return found


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    identity = await authenticate(request, runtime)
    allow = model_allow(identity)
    models = visible(served_models(runtime.settings), runtime.settings, allow)
    models += named_in(allow, runtime.settings, {str(m["id"]) for m in models})
    body = {"object": "list", "data": models}
    return web.Response(body=json_encoder.encode(body), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    identity = await authenticate(request, runtime)
    wanted = request.match_info["model"]
    found = next((m for m in served_models(runtime.settings) if m["id"] == wanted), None)
    provider, _, model = wanted.partition("/")
    if found is None and _model_name(model) and runtime.settings.provider(provider) is not None:
        # Any well-formed model name of an enabled provider routes, listed or not.
        found = {"id": wanted, "object": "model", "created": 0, "owned_by": provider}
    allow = model_allow(identity)
    if found is not None and allow and not visible([found], runtime.settings, allow):
        found = None  # not the key's to use: as if not served
    if found is not None:
        return web.Response(body=json_encoder.encode(found), content_type="application/json")
    raise ApiError(404, "model_not_found", f"model {wanted!r} is not served (see GET /v1/models)")
