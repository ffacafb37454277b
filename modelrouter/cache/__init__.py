"""The response cache: exact-match answers (in memory, or in Redis for the fleet) and the
coalescing of identical requests in flight, behind the actor system's `route`."""

from modelrouter.cache.factory import build_cache
from modelrouter.cache.front import ALONE, USE_CACHE, CachePolicy, ResponseCache

__all__ = ["ALONE", "USE_CACHE", "CachePolicy", "ResponseCache", "build_cache"]
