"""Answer text without the configured secrets: whole, or as it streams in pieces.

Only the configured secrets are matched (the provider keys and the others the running system
registers with its `Redactor`), exactly and case for case. Not the credential shapes that log
redaction also removes (`sk-...`, `Bearer ...`): in an answer about code those are ordinary
words, and the keys an upstream could echo are the configured ones.

Matching is one pass, leftmost first and, at one position, the longest secret: what a regex
alternation of the secrets longest first finds. A stream gives exactly the whole text's result,
however the text is cut: it holds back only a tail that could still grow into a secret (the
longest end of what it has that is a proper beginning of a secret), so at most the longest
secret's length less one character, and `flush` releases it at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class AnswerStream:
    """Text passed on as it comes: what a stream is when no secret is configured."""

    __slots__ = ()

    @property
    def held(self) -> str:
        """Text received and not released yet."""
        return ""

    def feed(self, text: str) -> str:
        """What of `text` (after what was held) may be released now."""
        return text

    def flush(self) -> str:
        """What was held, released at the end of the text."""
        return ""


PASS_THROUGH = AnswerStream()


def _beginnings(text: str) -> str:
    """A pattern for every non-empty beginning of `text`: `a(?:b(?:c)?)?` for "abc"."""
    pattern = ""
    for char in reversed(text[1:]):
        pattern = re.escape(char) + (f"(?:{pattern})?" if pattern else "")
    return re.escape(text[0]) + (f"(?:{pattern})?" if pattern else "")


def _first_beginning(text: str, secret: str, low: int, high: int) -> int:
    """The first position in [low, high) from which `text` runs to its end as a beginning of
    `secret`; `high` when there is none."""
    head = secret[0]
    at = text.find(head, low, high)
    while at != -1:
        if secret.startswith(text[at:]):
            return at
        at = text.find(head, at + 1, high)
    return high


class SecretText:
    """The configured secrets, compiled once per set: `redact` for a whole text, `stream` for
    one that arrives in pieces."""

    __slots__ = (
        "_inner",
        "_long",
        "_open",
        "_pattern",
        "_replace",
        "longest",
        "mark",
        "secrets",
    )

    def __init__(self, secrets: Iterable[str], *, mark: str, nested_max: int = 64) -> None:
        # Longest first: the alternation then takes the longest secret at a position.
        self.secrets: tuple[str, ...] = tuple(sorted(set(secrets), key=len, reverse=True))
        self.longest = len(self.secrets[0]) if self.secrets else 0
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if self.secrets else None
        # What could still become a secret: a proper beginning of one, running to the end. One
        # pattern for them all is the fast way, but the regex parser recurses once per nested
        # group: a secret longer than `nested_max` is looked for by a scan of its own instead.
        short = [s for s in self.secrets if 1 < len(s) <= nested_max]
        beginnings = "|".join(_beginnings(secret[:-1]) for secret in short)
        self._open = re.compile(rf"(?:{beginnings})\Z") if short else None
        self._long = tuple(s for s in self.secrets if len(s) > nested_max)
        self._inner = frozenset(char for secret in self.secrets for char in secret[:-1])
        self.mark = mark
        self._replace = mark.replace("\\", "\\\\")  # a replacement template: taken literally

    def redact(self, text: str) -> str:
        """`text` with every configured secret replaced by the mark."""
        # A scan per secret first: on a long text, much faster than the regex's when (nearly
        # always) none is there.
        if self._pattern is None or not any(secret in text for secret in self.secrets):
            return text
        return self._pattern.sub(self._replace, text)

    def find(self, text: str) -> re.Match[str] | None:
        """The first secret in `text` (one regex call: on a chunk's few characters, cheaper
        than a scan per secret)."""
        return self._pattern.search(text) if self._pattern is not None else None

    def stream(self) -> AnswerStream:
        """A redacting stream over this set of secrets (the set stays as it is now)."""
        return SecretStream(self) if self.secrets else PASS_THROUGH

    def first_open(self, text: str, start: int) -> int:
        """The first position from `start` where a secret could begin and run past the end of
        `text` (its end is a proper beginning of a secret); `len(text)` when there is none.
        Only the last `longest - 1` positions can be one."""
        end = first = len(text)
        if not text or text[-1] not in self._inner:
            return end  # it ends in what no secret goes on from (a space, a full stop)
        low = max(start, end - self.longest + 1)
        if self._open is not None:
            found = self._open.search(text, low)
            if found is not None:
                first = found.start()
        for secret in self._long:
            first = _first_beginning(text, secret, max(low, end - len(secret) + 1), first)
        return first

    def release(self, text: str) -> tuple[str, int]:
        """What of `text` is decided (with each secret in it replaced), and where the rest
        begins: a match is decided when no secret could still begin before it."""
        pattern = self._pattern
        assert pattern is not None
        parts: list[str] = []
        at = 0
        while True:
            cut = self.first_open(text, at)
            found = pattern.search(text, at)
            if found is None or found.start() >= cut:
                parts.append(text[at:cut])
                return "".join(parts), cut
            parts += (text[at : found.start()], self.mark)
            at = found.end()


class SecretStream(AnswerStream):
    """One answer's text redacted as it arrives (a new stream per answer)."""

    __slots__ = ("_held", "_secrets")

    def __init__(self, secrets: SecretText) -> None:
        self._secrets = secrets
        self._held = ""

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str) -> str:
        buffer = self._held + text if self._held else text
        secrets = self._secrets
        if secrets.find(buffer) is None:  # nearly always: no secret whole, a tail to keep
            cut = secrets.first_open(buffer, 0)
            released = buffer[:cut]
        else:
            released, cut = secrets.release(buffer)
        self._held = buffer[cut:]
        return released

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return self._secrets.redact(rest)
