"""Operational logging: text or one JSON object per line, with the per-message id as a field.

Rule 1: logs are not the audit trail: no message bodies, addresses masked (``recipients.mask``)
        by the code that logs them.
Rule 2: every line about a message starts its text with ``[<relay id>]``; the JSON format
        lifts that id into a ``relay_id`` field so that log pipelines can group by message.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_RELAY_ID = re.compile(r"^\[([0-9a-f]{12})\] ")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if match := _RELAY_ID.match(message):
            entry["relay_id"] = match.group(1)
            message = message[match.end() :]
        entry["msg"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosmtpd logs every command with the full sender and recipient addresses at INFO
    # ("mail.log"): Rule 1 keeps it to warnings; the relay logs what it needs, masked.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLevelName(level)))
