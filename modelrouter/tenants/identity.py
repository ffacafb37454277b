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
