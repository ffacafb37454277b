"""Who sent a request: the one value authentication hands to the rest of the request path.

History rows, spend, per-key limits and the cache scope all follow `client_id`, never the
secret: a static `API_KEY` entry's id is a hash of it, a virtual key's is its `key_...` id
(so rotating a virtual key keeps its history), and with authentication off it is `anonymous`.
"""

from __future__ import annotations

import msgspec

from modelrouter.tenants.keys import Key


class Identity(msgspec.Struct, frozen=True, gc=False):
    client_id: str
    key: Key | None = None  # the virtual key, when the request carried one

    @property
    def team(self) -> str | None:
        return None if self.key is None else self.key.team


def cache_scope(identity: Identity | None, scope: str) -> str:
    """The response cache's scope of a request (CACHE_SCOPE `scope`): a virtual key's id, or
    its team; "" (one scope) for the static API_KEY list, requests without a key, and global."""
    key = None if identity is None else identity.key
    if key is None or scope == "global":
        return ""
    if scope == "team" and key.team is not None:
        return f"team:{key.team}"
    return f"key:{key.id}"
