"""Log output of a node process: text lines for people, or one JSON object per line.

Role: `configure` sets up the root logger from SOIM_LOG_LEVEL and SOIM_LOG_FORMAT (text: the
timestamp, node id, level, logger and message; json: an object with ts, level, node, logger,
msg and, when an exception is logged, exc), on stderr. No sockets.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in "exc", escaped)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str, node_id: str) -> None:
    """The root logger of this process at `level`, in `log_format` (one of FORMATS)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
