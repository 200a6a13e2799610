"""The Dockerfile and deploy/ examples cannot be run here (no Docker engine): check by reading
that they reference files that exist and settings that load."""

from __future__ import annotations

import re
from pathlib import Path

from relay.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_existing_files_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    sources = [m.group(1).split() for m in re.finditer(r"^COPY (.+) \S+$", text, re.M)]
    assert sources
    for group in sources:
        for source in group:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "EXPOSE 2525 8025" in text


def test_container_config_loads_and_listens_beyond_loopback() -> None:
    path = ROOT / "deploy" / "config.container.toml"
    settings = parse_settings(path.read_text(), str(path), env={"RELAY_LINK_KEY": "k"})
    assert settings.smtp.listen.startswith("0.0.0.0:")
    assert settings.web.listen.startswith("0.0.0.0:")
    assert settings.rules.dir == ""  # the rules shipped inside the package
    # Never an open relay, even in the container.
    assert all(not net.endswith("/0") for net in settings.smtp.allowed_clients)


def test_haproxy_checks_readiness_of_the_web_endpoints() -> None:
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in text
    assert "option smtpchk" in text
