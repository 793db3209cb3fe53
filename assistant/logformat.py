"""LOG_FORMAT=json: each log record as one JSON object on one line."""

import json
import logging
from datetime import UTC, datetime


class JSONFormatter(logging.Formatter):
    """time, level, logger and message, plus the traceback when there is one.

    The message is the formatted line the plain format would print, so the
    key=value pairs of the per-request line (assistant.metering) stay
    searchable in a collector that does not parse further.
    """

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
