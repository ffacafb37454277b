"""What makes two requests the same answer: the cache key, and whether a request is cacheable.

The key is a hash of the normalised request: its messages, the model chain it resolves to
(provider and model of each candidate, so an alias edited in the configuration is a new key),
whether it streams (a replay gives the same events the upstream gave in that mode), and every
parameter that changes the answer. Never the client key or the request id; `user` only with
CACHE_KEY_USER.
"""

from __future__ import annotations

import hashlib

import msgspec

from modelrouter.config import CacheMode
from modelrouter.schemas import ChatRequest

KEY_VERSION = b"v1"
Chain = tuple[tuple[str, str], ...]


class _Normal(msgspec.Struct, array_like=True):
    request: ChatRequest
    chain: Chain
    stream: bool


_encode = msgspec.json.Encoder().encode


def cacheable(request: ChatRequest, mode: CacheMode) -> bool:
    """`all`: every request; `deterministic`: temperature 0 or a seed; `off`: none."""
    if mode == "all":
        return True
    if mode == "deterministic":
        return request.temperature == 0 or request.seed is not None
    return False


def _real(value: float | None) -> float | None:
    """0 and 0.0 are one temperature (JSON decoding gives floats; code may pass ints)."""
    return None if value is None else float(value)


def cache_key(
    request: ChatRequest, chain: Chain, *, stream: bool, with_user: bool, scope: str = ""
) -> str:
    """A hex digest that two requests share exactly when the same answer serves both."""
    # Routing fields are replaced by the chain they resolve to; struct fields encode in
    # their declared order, so the encoding is canonical.
    normal = msgspec.structs.replace(
        request,
        provider=None,
        model=None,
        fallback=True,
        user=request.user if with_user else None,
        temperature=_real(request.temperature),
        top_p=_real(request.top_p),
        presence_penalty=_real(request.presence_penalty),
        frequency_penalty=_real(request.frequency_penalty),
    )
    digest = hashlib.blake2b(KEY_VERSION, digest_size=20)
    digest.update(_encode(_Normal(normal, chain, stream)))
    if scope:  # a tenant's own answers (CACHE_SCOPE); none: the global scope, as before
        digest.update(b"\x00scope\x00" + scope.encode())
    return digest.hexdigest()
