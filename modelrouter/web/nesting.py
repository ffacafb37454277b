"""A bound on how deeply the free-form parts of a request may nest.

`response_format.json_schema` and `tools[].function.parameters` are JSON Schemas, free-form
objects that the gateway relays as they are. Nested a thousand deep, they exhausted Python's
recursion in the decoder (or later, in an encoder) and the client got a 500. Now a request
nested deeper than MAX_DEPTH is a 400 that names the parameter; real schemas are a few levels
deep.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Final

from modelrouter.errors import ApiError
from modelrouter.schemas import ChatRequest

MAX_DEPTH: Final = 64
FREE_FORM: Final = ("response_format.json_schema", "tools[].function.parameters")
# Levels above a free-form value (the request, `tools`, the tool, `function`...): deep_parameter
# looks this much deeper, so an allowed schema is never named in place of the culprit.
_ABOVE: Final = 8
SCAN_TOKENS: Final = 100_000
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def too_deep(param: str) -> ApiError:
    return ApiError(
        400,
        "invalid_request",
        f"`{param}` is nested deeper than {MAX_DEPTH} levels",
        param=param,
    )


def check_nesting(request: ChatRequest) -> None:
    """Raise a 400 naming the first free-form parameter nested deeper than MAX_DEPTH."""
    schema = request.response_format.json_schema if request.response_format else None
    if schema and _deeper_than(schema, MAX_DEPTH):
        raise too_deep("response_format.json_schema")
    for position, tool in enumerate(request.tools or ()):
        if tool.function.parameters and _deeper_than(tool.function.parameters, MAX_DEPTH):
            raise too_deep(f"tools[{position}].function.parameters")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` has containers nested more than `limit` deep (no recursion)."""
    level: list[Any] = [value]
    for _ in range(limit):
        inner: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                inner.extend(v for v in item if isinstance(v, dict | list))
        if not inner:
            return False
        level = inner
    return True


def deep_parameter(body: bytes) -> ApiError:
    """The 400 for a body too deep to decode at all: names where it passes MAX_DEPTH.

    Only on that error path, and bounded: at most SCAN_TOKENS tokens are read (past them, the
    name is that of the place reached), so a megabyte of brackets costs a fraction of a second
    at worst."""
    path: list[str | int] = []  # the key or index at each open level
    keys: list[bool] = []  # whether each open level is an object
    last_string = ""
    for match in itertools.islice(_TOKEN.finditer(body), SCAN_TOKENS):
        token = match.group()
        if token in (b"{", b"["):
            if len(keys) >= MAX_DEPTH + _ABOVE:
                return too_deep(_name(path) if keys[0] else "body")
            keys.append(token == b"{")
            path.append("" if token == b"{" else 0)
        elif token in (b"}", b"]"):
            if keys:
                keys.pop()
                path.pop()
        elif token == b",":
            if keys and not keys[-1]:
                path[-1] = int(path[-1]) + 1
        elif token == b":":
            if keys and keys[-1]:
                path[-1] = last_string
        else:
            last_string = token[1:-1].decode("utf-8", "replace")
    return too_deep(_name(path) if keys and keys[0] else "body")


def _name(path: list[str | int]) -> str:
    """The parameter at `path` (["tools", 0, "function", ...]), as named in the error: a
    free-form parameter by its own name, anything else by its top-level key."""
    steps = [step for step in path if step != ""]
    if steps[:2] == ["response_format", "json_schema"]:
        return "response_format.json_schema"
    if len(steps) >= 4 and steps[0] == "tools" and steps[2:4] == ["function", "parameters"]:
        return f"tools[{steps[1]}].function.parameters"
    return str(steps[0]) if steps else "body"
