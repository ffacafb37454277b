"""One provider's pool, built from the settings: proxy, trust store, body bound, User-Agent."""

from __future__ import annotations

import structlog

from modelrouter import __version__
from modelrouter.config import ProviderSettings, Settings
from modelrouter.transport.pool import Pool
from modelrouter.transport.proxy import choose_proxy
from modelrouter.transport.tls import tls_context

USER_AGENT = f"modelrouter/{__version__}"

log = structlog.get_logger("modelrouter.transport")


def open_pool(provider: ProviderSettings, settings: Settings, *, url: str) -> Pool:
    """The connection pool for `provider`'s endpoint `url` (its base URL plus the adapter's
    path). Opens no connection: the first request does."""
    upstream = settings.upstream
    proxy = choose_proxy(url, provider.proxy, upstream)
    context = None
    if url.startswith("https:"):
        context = tls_context(
            provider.ca_bundle, cafile=upstream.ssl_cert_file, capath=upstream.ssl_cert_dir
        )
    pool = Pool(
        url,
        max_connections=provider.max_connections,
        connect_timeout=settings.connect_timeout,
        ssl_context=context,
        proxy=proxy,
        max_body=upstream.max_body_bytes,
        user_agent=USER_AGENT,
    )
    log.info(
        "upstream_route",
        provider=provider.name,
        origin=pool.authority,
        proxy=proxy.label if proxy is not None else "direct",
    )
    return pool
