"""How a deployment continues an assistant turn (a stream cut mid-answer, CONTINUE_ON_CUT).

- `anthropic_prefill`: Anthropic's Messages API continues a final assistant message as is
  (a "prefill"); its text must not end in whitespace (the caller trims it). Not with extended
  thinking (which this gateway does not send).
- `assistant_prefix`: an OpenAI-compatible server that continues the final assistant message
  when asked: vLLM's chat completions take `"continue_final_message": true` with
  `"add_generation_prompt": false`, which is what is added to the mapped body here.
- `none`: it cannot; it is skipped.

The default is `anthropic_prefill` for the `anthropic` kind and `none` for the others;
`<PROVIDER>_CONTINUATION` or the routing file's `continuation:` says otherwise.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelrouter.config import Continuation, ProviderSettings

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


def continuation_of(settings: ProviderSettings) -> Continuation:
    if settings.continuation is not None:
        return settings.continuation
    return "anthropic_prefill" if settings.kind == "anthropic" else "none"


def continue_final(body: bytes) -> bytes:
    """An OpenAI-compatible body asked to continue its final (assistant) message."""
    fields = _decode(body)
    fields["continue_final_message"] = True
    fields["add_generation_prompt"] = False
    return _encode(fields)
