from __future__ import annotations

import json
import logging

from relay.ops.logs import JsonFormatter


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("relay.pipeline", logging.INFO, __file__, 1, msg, args, None)


def test_json_lines_lift_the_message_id_and_escape_quotes() -> None:
    line = JsonFormatter().format(_record('[0a025166e1ab] said "%s"', "ok\nnext"))
    entry = json.loads(line)
    assert entry["relay_id"] == "0a025166e1ab"
    assert entry["msg"] == 'said "ok\nnext"'
    assert entry["logger"] == "relay.pipeline" and entry["level"] == "INFO"
    assert "\n" not in line


def test_lines_without_an_id_have_no_relay_id_field() -> None:
    entry = json.loads(JsonFormatter().format(_record("rules reloaded")))
    assert "relay_id" not in entry


def test_aiosmtpd_command_log_with_addresses_is_kept_to_warnings() -> None:
    from relay.ops.logs import configure

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("mail.log").level)
    try:
        configure("INFO", "text")
        assert not logging.getLogger("mail.log").isEnabledFor(logging.INFO)
        assert logging.getLogger("relay.pipeline").isEnabledFor(logging.INFO)
    finally:  # leave pytest's own log capture as it was
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("mail.log").setLevel(saved[2])
