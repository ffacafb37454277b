"""The keys page's page size, read from the page's own script (one number, not a copy)."""

from __future__ import annotations

import re
from importlib import resources

_SCRIPT = resources.files("modelrouter.web").joinpath("ui/js/keys.js").read_text()
PAGE_SIZE = int(re.search(r"export const PAGE_SIZE = (\d+);", _SCRIPT).group(1))  # type: ignore[union-attr]
