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


def test_addresses_and_secrets_are_masked_in_text_and_json_even_in_tracebacks() -> None:
    from relay.ops.logs import TextFormatter, redact_url, register_secrets

    register_secrets(["s3cr3t-link-key-value"])
    try:
        raise ValueError("recipient <alice.smith@example.org> refused; key s3cr3t-link-key-value")
    except ValueError:
        import sys

        info = sys.exc_info()
        record = logging.LogRecord(
            "relay.pipeline",
            logging.ERROR,
            __file__,
            1,
            "[0a025166e1ab] to %s",
            ("bob@x.example",),
            info,
        )
    text = TextFormatter().format(record)
    entry = json.loads(JsonFormatter().format(record))
    for shown in (text, entry["msg"] + entry["exception"]):
        assert "alice.smith@" not in shown and "bob@" not in shown
        assert "s3cr3t-link-key-value" not in shown
        assert "a***@example.org" in shown or "b***@x.example" in shown
    assert "a***@example.org" in text and "b***@x.example" in text
    assert redact_url("smtp://u:pw@h:25") == "smtp://u:***@h:25"
    assert redact_url("redis+sentinel://:pw@s1:26379,s2:26379/m/0").startswith(
        "redis+sentinel://:***@s1"
    )
