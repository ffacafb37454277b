"""TLS contexts for upstream connections: the system's trust store, or a provider's own CA.

The default context trusts what OpenSSL trusts (the system store, or `SSL_CERT_FILE` /
`SSL_CERT_DIR` when set); `<PROVIDER>_CA_BUNDLE` replaces that store for one provider only, as
curl's `--cacert` does. Certificates and host names are always verified; TLS 1.2 is the floor.
"""

from __future__ import annotations

import functools
import ssl


@functools.lru_cache(maxsize=32)
def tls_context(
    ca_bundle: str | None = None, *, cafile: str | None = None, capath: str | None = None
) -> ssl.SSLContext:
    """One context per trust choice, shared by every pool that makes the same choice."""
    if ca_bundle is not None:
        context = ssl.create_default_context(cafile=ca_bundle)
    elif cafile is not None or capath is not None:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
