"""Conversation history in PostgreSQL (DATABASE_URL): every finished request, written in
batches off the request path, and read back by its own client through `GET /v1/history`."""

from modelrouter.history.queries import (
    MAX_LIMIT,
    MAX_TEXT,
    BadCursor,
    BadQuery,
    Filters,
    decode_cursor,
    in_range,
    text_problem,
)
from modelrouter.history.records import HistoryRecord, Record
from modelrouter.history.service import History
from modelrouter.history.writer import DB_ERRORS

__all__ = [
    "DB_ERRORS",
    "MAX_LIMIT",
    "MAX_TEXT",
    "BadCursor",
    "BadQuery",
    "Filters",
    "History",
    "HistoryRecord",
    "Record",
    "decode_cursor",
    "in_range",
    "text_problem",
]
