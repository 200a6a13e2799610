"""`relay check`: the same pipeline as the relay, offline, over the shipped examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "RELAY_CONFIG": ""},
    )


def test_check_corpus_json_finds_every_labelled_tracker(corpus_dir: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in corpus_dir.glob("msg*.eml"))
    result = _run("check", *files, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(files)
    labels = {
        entry["file"]: entry for entry in json.loads((corpus_dir / "labels.json").read_text())
    }
    for data in lines:
        label = labels[Path(data["file"]).name]
        assert data["message_id"] == label["message_id"]
        recipient = data["recipients"][0]
        found = {t["url"] for t in recipient["trackers"]}
        for tracker in label["trackers"]:
            assert tracker["url"] in found, (data["file"], tracker["url"])
        for decoy in label["decoys"]:
            assert decoy["url"] not in found, (data["file"], decoy["url"])
        # No consent recorded anywhere: nothing consent-based may stay.
        assert all(t["action"] not in ("keep", "gateway") for t in recipient["trackers"])
        assert all(t["basis"] in ("none", "exempt") for t in recipient["trackers"])
        assert set(recipient) >= {"rcpt", "category", "category_reason", "footer_injected"}


def test_check_out_writes_the_rewritten_messages(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(
        "check", str(corpus_dir / "msg005.eml"), "--rcpt", "a@example.org", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = out / "msg005.0.eml"
    assert written.exists()
    labels = json.loads((corpus_dir / "labels.json").read_text())
    label = next(entry for entry in labels if entry["file"] == "msg005.eml")
    import email
    from email import policy

    parsed = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    html = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    content = html.get_content()
    for tracker in label["trackers"]:
        assert tracker["url"] not in content
    assert "a@example.org" in (out / "msg005.0.rcpts").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "/nonexistent.eml", "--rcpt", "a@b.c"), "/nonexistent.eml: cannot read"),
        (("check", "--config", "/nonexistent.toml", "x.eml"), "cannot read the configuration"),
    ],
)
def test_check_bad_input_exits_2_with_a_clear_message(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_local_pack_by_sender_domain_applies_to_the_from_header(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """The README's worked example for compliance staff, as a user would run it."""
    local = tmp_path / "rules.local"
    local.mkdir()
    (local / "packs.toml").write_text('[packs.by_sender_domain]\n"news.example.fr" = "strict"\n')
    result = _run("check", str(corpus_dir / "msg005.eml"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recipient = json.loads(result.stdout)["recipients"][0]
    assert recipient["pack"] == "strict"
    assert {t["policy_rule"] for t in recipient["trackers"]} == {"strict-default"}


def test_check_json_says_how_each_tracker_was_found(tmp_path: Path) -> None:
    """Every tracker names its rule and whether a signature or a heuristic caught it."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(
        b"From: news@shop.example\r\nTo: a@example.org\r\nSubject: x\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<img src="https://u1.ct.sendgrid.net/wf/open?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq">'
        b'<img src="https://t.unknown.example/x.gif" width="1" height="1">'
        b'<img src="https://cdn.shop.example/p.png" data-relay-purpose="deliverability">\r\n'
    )
    result = _run("check", str(eml), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    trackers = data["recipients"][0]["trackers"]
    assert [(t["rule"], t["detected_by"]) for t in trackers] == [
        ("sendgrid-open", "signature"),
        ("tiny-size", "heuristic"),
        ("app-label", "label"),
    ]
    assert data["unfinished_parts"] == []


def test_check_says_which_recipients_a_signed_message_would_not_reach(tmp_path: Path) -> None:
    from tests.test_compliance import signed_newsletter

    eml = tmp_path / "signed.eml"
    eml.write_bytes(signed_newsletter())
    result = _run("check", str(eml), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (recipient,) = json.loads(result.stdout)["recipients"]
    assert "sendgrid-open (campaign_performance)" in recipient["withheld"]
    assert recipient["trackers"][0]["policy_rule"] == "signed-no-basis"
    human = _run("check", str(eml), cwd=tmp_path)
    assert "NOT DELIVERED: a signed or encrypted part carries" in human.stdout
