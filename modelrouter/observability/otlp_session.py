"""The `requests` session the OTLP/HTTP span exporter sends with: the environment read once.

A `requests` session that trusts the environment reads it again at every request: the proxy
variables twice (each a scan of the whole environment), NO_PROXY against the host, the CA bundle
variables and ~/.netrc. Measured under callgrind, that is about 1.3 million instructions of an
export's 4.8 million (two spans, the connection kept alive): the largest share of an export
that does not depend on its spans. The exporter sends to one URL for the process's life and the
environment does not change, so this session reads it for that URL once, at start-up, and then
behaves as `requests` would have: the same proxy (or none, by NO_PROXY), the same `.netrc`
credentials, the same CA bundle (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE over the exporter's).
"""

from __future__ import annotations

import os
from typing import Any

import requests
from requests.utils import get_environ_proxies, get_netrc_auth


class EnvironmentReadOnce(requests.Session):
    """A session for requests to `url` only, with the environment's settings for it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.proxies.update(get_environ_proxies(url))
        self.auth = get_netrc_auth(url)
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.trust_env = False  # from here on, nothing is read from the environment

    def merge_environment_settings(
        self,
        url: str,
        proxies: dict[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: Any,
    ) -> dict[str, Any]:
        # As `requests` does with `trust_env`: the environment's bundle wins over the session's.
        if self._ca_bundle and (verify is True or verify is None):
            verify = self._ca_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)
