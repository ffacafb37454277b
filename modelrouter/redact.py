"""Removes credentials from text before it reaches a log line, an error body or a metric; and
the configured secrets from answer text (`Redactor.answer`, `Redactor.stream`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from modelrouter.answer_redaction import AnswerStream, SecretText

# Bearer tokens and the key shapes of the providers we talk to (sk-, gsk_, sk-or-, sk-ant-);
# the value of a (Proxy-)Authorization header (Basic or Token with the scheme kept, or a bare
# value); the password in a URL's userinfo (`scheme://user:password@host`). The last two never
# run past a backslash or a quote, so a rendered JSON line stays valid JSON.
_PATTERNS = re.compile(
    r"(?i:bearer)\s+(?=[A-Za-z0-9._~+/=-]*[0-9_+/=-])[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|gsk|pk|rk)[-_][A-Za-z0-9_-]{8,}"
    r"|\bkey-[A-Za-z0-9]{16,}"
    r"|(?<=(?i:authorization): (?i:basic) )[^\s\\\"',;]+"
    r"|(?<=(?i:authorization): (?i:token) )[^\s\\\"',;]+"
    r"|(?<=(?i:authorization): )(?!(?i:bearer|basic|token)\s)[^\s\\\"',;]+"
    r"|(?<=://)[^/\s:@\\\"']*:[^/\s@\\\"']+(?=@)"
)
REDACTED = "[REDACTED]"


def _may_hold_key(lowered: str) -> bool:
    """Every match of _PATTERNS contains one of these: looking for them first spares the regex
    on nearly all text (see docs/performance.md)."""
    return (
        "sk-" in lowered
        or "sk_" in lowered
        or "bearer" in lowered
        or "key-" in lowered
        or "pk-" in lowered
        or "pk_" in lowered
        or "rk-" in lowered
        or "rk_" in lowered
        or "authorization: " in lowered
        or "@" in lowered
    )


class Redactor:
    """Replaces configured secrets and anything shaped like a credential with `[REDACTED]`.

    Secrets are counted: each `add` is undone by one `remove` of the same secrets, so several
    owners (two apps in one process) can share a redactor and each take back its own.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._counts: Counter[str] = Counter()
        self._secrets: tuple[str, ...] = ()
        self._answers = SecretText((), mark=REDACTED)
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._counts.update(s for s in secrets if len(s) >= 4)
        self._refresh()

    def remove(self, secrets: Iterable[str]) -> None:
        self._counts.subtract(s for s in secrets if len(s) >= 4)
        self._counts = +self._counts  # drop what nobody holds any more
        self._refresh()

    def _refresh(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = tuple(sorted(self._counts, key=len, reverse=True))
        self._answers = SecretText(self._secrets, mark=REDACTED)  # compiled here, once

    def answer(self, text: str) -> str:
        """A whole answer's text with the configured secrets replaced (exact match only; no
        credential shapes: see modelrouter/answer_redaction.py)."""
        return self._answers.redact(text)

    def stream(self) -> AnswerStream:
        """A stream for one answer's text, redacted like `answer`: `feed(text)` returns what
        may be sent now, `flush()` what was held back, at the end. With no secret configured,
        a shared stream that passes text on as it is."""
        return self._answers.stream()

    def shorten(self, text: str, limit: int) -> str:
        """`text` redacted, then cut to `limit` characters: never the other way round, which
        could cut a credential where its pattern no longer matches and let the rest out."""
        return self(text)[:limit]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if _may_hold_key(text.lower()):
            return _PATTERNS.sub(REDACTED, text)
        return text
