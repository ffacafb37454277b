"""Gemini's request side: a `ChatRequest` as a `GenerateContentRequest` body, and what in a
request Gemini cannot take (sources in `modelrouter.providers.gemini`).

Leading system messages become `systemInstruction` (a part each); `assistant` is the role
`model`; a tool result is a `functionResponse` part, named by its call's function, with the text
as `output`; the results of one turn's calls share one `user` turn; tools are
`functionDeclarations` whose JSON Schema goes as `parametersJsonSchema`. A call going back gets
the thought signature its id carries, or, when no call of the turn has one (another provider
made them), Google's placeholder on the first: Gemini 3 checks the first call of each step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from modelrouter.events import UpstreamFailure
from modelrouter.providers.base import (
    Refusal,
    call_arguments,
    given,
    stop_list,
    unreadable_arguments,
)
from modelrouter.schemas import ChatRequest, FunctionDef, Message, ToolCall

MAX_STOP_SEQUENCES = 5  # GenerationConfig.stopSequences: "up to 5 character sequences"
# FunctionDeclaration.name: a letter or an underscore first, then letters, digits, _ . : -
FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
SIGNATURE_MARK: Final = "__thought__"
_URL_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")
# The value Google documents for a call whose signature is unknown (history from another model).
FOREIGN_SIGNATURE: Final = "skip_thought_signature_validator"
UNANSWERED: Final = "a tool result whose call is not in the conversation"
_CONFIG = {
    "max_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_MODES = {"none": "NONE", "required": "ANY"}  # auto is the default: not sent


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The request body; the model and the stream flag are in the path, not here."""
    messages = request.messages
    lead = _leading_system(messages)
    out: dict[str, Any] = {"contents": _contents(messages, lead)}
    if lead:
        out["systemInstruction"] = {"parts": [{"text": m.content} for m in messages[:lead]]}
    config = _generation_config(request)
    if config:
        out["generationConfig"] = config
    if request.tools:
        declarations = [_declaration(tool.function) for tool in request.tools]
        out["tools"] = [{"functionDeclarations": declarations}]
    tool_config = _tool_config(request)
    if tool_config is not None:
        out["toolConfig"] = {"functionCallingConfig": tool_config}
    return out


def request_refusals(request: ChatRequest, features: list[str]) -> list[Refusal]:
    """What Gemini would answer with a 400, or has no way to honour (beyond its features)."""
    refused: list[Refusal] = []
    if request.parallel_tool_calls is False:
        refused.append(Refusal("parallel_tool_calls", "Gemini cannot limit a turn to one call"))
    if len(stop_list(request.stop) or ()) > MAX_STOP_SEQUENCES:
        refused.append(Refusal("stop", f"more than {MAX_STOP_SEQUENCES} stop sequences"))
    if any(m.role == "system" for m in request.messages[_leading_system(request.messages) :]):
        # systemInstruction comes before the conversation; moving a later one would move the
        # instruction. Another provider keeps it where it is.
        refused.append(Refusal("messages", "a system message after the conversation started"))
    if "tools" in features:  # the history holds tool turns only if so
        refused += unreadable_arguments(request.messages)
        refused += _tool_refusals(request)
    return refused


def _signature(call_id: str) -> str | None:
    """The thought signature carried by a tool call id, as Gemini wrote it (standard base64)."""
    _, mark, safe = call_id.partition(SIGNATURE_MARK)
    if not mark or not _URL_SAFE.fullmatch(safe):
        return None
    return safe.replace("-", "+").replace("_", "/") + "=" * (-len(safe) % 4)


def _leading_system(messages: list[Message]) -> int:
    count = 0
    for message in messages:
        if message.role != "system":
            break
        count += 1
    return count


def _contents(messages: list[Message], lead: int) -> list[dict[str, Any]]:
    """The conversation after the leading system messages, in Gemini's turns."""
    names: dict[str, str] = {}  # tool call id -> its function, for the results' `name`
    out: list[dict[str, Any]] = []
    for position in range(lead, len(messages)):
        message = messages[position]
        if message.role == "tool":
            part = {"functionResponse": _response(message, names, position)}
            last = out[-1]["parts"] if out and out[-1]["role"] == "user" else None
            if last is not None and "functionResponse" in last[0]:
                last.append(part)  # the results of one turn's calls, in one turn
            else:
                out.append({"role": "user", "parts": [part]})
        elif message.role == "assistant":
            parts = _model_parts(message, position)
            names.update((call.id, call.function.name) for call in message.tool_calls or ())
            if parts:  # an empty assistant turn says nothing
                out.append({"role": "model", "parts": parts})
        elif message.role == "user":
            out.append({"role": "user", "parts": [{"text": message.content}]})
        else:  # refused at planning (unsupported)
            raise UpstreamFailure(None, f"messages[{position}]: a late system message", status=400)
    return out


def _model_parts(message: Message, position: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    calls = message.tool_calls or []
    signatures = [_signature(call.id) for call in calls]
    for i, call in enumerate(calls):
        part: dict[str, Any] = {"functionCall": _function_call(call, position)}
        signature = signatures[i]
        if signature is None and i == 0 and not any(signatures):
            signature = FOREIGN_SIGNATURE  # Gemini 3 checks the first call of each step
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_call(call: ToolCall, position: int) -> dict[str, Any]:
    arguments = call_arguments(call)
    if arguments is None:  # refused at planning (unreadable_arguments)
        message = f"messages[{position}]: tool call arguments are not a JSON object"
        raise UpstreamFailure(None, message, status=400)
    return {"name": call.function.name, "args": arguments}


def _response(message: Message, names: Mapping[str, str], position: int) -> dict[str, Any]:
    """A tool result as a FunctionResponse: its function's name, and the text as `output`."""
    name = message.name or names.get(message.tool_call_id or "")
    if not name:  # refused at planning (_tool_refusals)
        message_ = f"messages[{position}]: {UNANSWERED}"
        raise UpstreamFailure(None, message_, status=400)
    return {"name": name, "response": {"output": message.content}}


def _tool_refusals(request: ChatRequest) -> list[Refusal]:
    """Tool names Gemini rejects, and results it could not name."""
    refused: list[Refusal] = []
    names = [tool.function.name for tool in request.tools or ()]
    if any(not FUNCTION_NAME.fullmatch(name) for name in names):
        refused.append(Refusal("tools", "a function name Gemini does not accept"))
    known: set[str] = set()
    for message in request.messages:
        known.update(call.id for call in message.tool_calls or ())
        if message.role == "tool" and not message.name and message.tool_call_id not in known:
            refused.append(Refusal("messages", UNANSWERED))
            break
    return refused


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config = given(request, _CONFIG)
    if request.stop is not None:
        config["stopSequences"] = stop_list(request.stop)
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        config["responseMimeType"] = "application/json"
        schema = (response_format.json_schema or {}).get("schema")
        if response_format.type == "json_schema" and schema is not None:
            config["responseJsonSchema"] = schema
    return config


def _declaration(function: FunctionDef) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters:
        declaration["parametersJsonSchema"] = function.parameters
    return declaration


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None or choice == "auto":
        return None
    if isinstance(choice, str):
        return {"mode": _MODES[choice]}
    return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
