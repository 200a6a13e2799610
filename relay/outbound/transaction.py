"""One mail transaction on an open session: MAIL, every RCPT, DATA, the message, its reply.

Input: a ``Submission`` (sender, recipients, bytes, the client's ESMTP parameters, XFORWARD
attributes) and a ``Connection`` past EHLO. Output: a ``GroupOutcome``, or ``NotSent`` /
``SentUnknown`` when the connection fails (the pool decides what follows).

Rule 1: with PIPELINING (RFC 2920), [RSET] [XFORWARD...] MAIL, every RCPT and DATA go out in one
        write and their replies are read together; the message and its end line go out in one
        write (or in ``CHUNK`` pieces for a large one, each waiting for the socket to drain).
        Without PIPELINING the same commands go one at a time, stopping at a refused MAIL and
        before DATA when no RCPT was accepted.
Rule 2: every reply counts (RFC 2920 3.1): a refused MAIL refuses every recipient with its
        reply; a recipient keeps its RCPT reply when refused, else gets the reply to the end of
        data; a 354 to DATA after every RCPT was refused is answered with the end line alone (no
        message is sent), and the next transaction starts with RSET.
Rule 3: what needs no upstream is checked first and writes nothing: data with NUL or a bare CR
        or LF (never sent; see ``relay.smtp.command``), an address that cannot be written, an
        address or header that needs SMTPUTF8 the upstream lacks (553 5.6.7 for that address:
        RFC 6531 3.4), 8-bit data for an upstream without 8BITMIME (re-encoded by ``downgrade``,
        by default ``core.downgrade.to_seven_bit``, or refused with 554 5.6.3: RFC 6152 3).
Rule 4: before the message is written, a lost connection is ``NotSent``: nothing reached the
        upstream, so the pool may retry on a new connection. From the first byte of the message
        on it is ``SentUnknown``: the upstream may have taken it (RFC 1047), so nobody retries.
Rule 5: ``commit`` (the delivery ledger's in-flight entry) is awaited once the end line is
        written and before its reply is read, while the upstream decides: a relay killed after
        the entry sends no second copy; killed before it, a duplicate, never a loss. A commit
        that fails is logged and the reply still read: the ledger's final record follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from relay import replies
from relay.core.downgrade import to_seven_bit
from relay.errors import DowngradeRefused
from relay.outbound.connection import Connection, UpstreamLost
from relay.outbound.outcome import Commit, Downgrade, GroupOutcome, UpstreamReply, XForward
from relay.outbound.session import Notices
from relay.smtp import command, params
from relay.smtp import xforward as xfwd
from relay.smtp.reply import Extensions, ServerReply

log = logging.getLogger("relay.outbound.transaction")

CHUNK = 1 << 20  # bytes of message per write for large messages


@dataclass(frozen=True)
class Submission:
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    options: tuple[str, ...] = ()
    rcpt_options: Mapping[str, Sequence[str]] = field(default_factory=dict)
    xforward: XForward = ()
    commit: Commit | None = None  # the ledger's in-flight entry (forward.Commit)


@dataclass
class Plan:
    """The commands for one upstream, and the replies decided without it (Rule 3)."""

    final: dict[str, UpstreamReply]
    mail: bytes = b""
    rcpts: list[tuple[str, bytes]] = field(default_factory=list)
    payload: bytes = b""


class NotSent(Exception):
    """Rule 4: the connection failed before any byte of the message was written."""

    def __init__(self, reason: str, known: Mapping[str, UpstreamReply]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.known = dict(known)  # replies that stand whatever happens next


class SentUnknown(Exception):
    """Rule 4: the connection failed while or after the message was written."""

    def __init__(self, reason: str, known: Mapping[str, UpstreamReply]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.known = dict(known)


def _reply(server: ServerReply) -> UpstreamReply:
    return UpstreamReply(server.code, server.message)


def _own(
    reply: replies.Reply, rcpts: Sequence[str], final: dict[str, UpstreamReply], detail: str = ""
) -> None:
    for rcpt in rcpts:
        final.setdefault(rcpt, UpstreamReply.own(reply, detail))


def _unsendable(sub: Submission, ext: Extensions, final: dict[str, UpstreamReply]) -> bool:
    """Rule 3, the checks that need neither conversion nor the network; whether the message
    needs SMTPUTF8 from this upstream."""
    defect = command.body_defect(sub.data)
    if defect == "NUL byte":
        _own(replies.OUT_NUL, sub.rcpts, final)
    elif defect:
        log.error("rendered message has a %s: not sent (a relay defect, see R-313)", defect)
        _own(replies.OUT_LINE_ENDING, sub.rcpts, final, defect)
    smtputf8 = params.needs_smtputf8(sub.mail_from, sub.rcpts, sub.data, sub.options)
    if final or not smtputf8 or ext.has("SMTPUTF8"):
        return smtputf8 and not final
    if not sub.mail_from.isascii():
        _own(replies.OUT_SMTPUTF8_ADDRESS, sub.rcpts, final, "sender")
    _own(replies.OUT_SMTPUTF8_ADDRESS, [r for r in sub.rcpts if not r.isascii()], final)
    if params.declared(sub.options, "SMTPUTF8") and not params.header_section(sub.data).isascii():
        _own(replies.OUT_SMTPUTF8_HEADER, sub.rcpts, final)
    return False


async def _seven_bit(
    data: bytes, downgrade: Downgrade | None, converted: dict[bytes, bytes]
) -> bytes:
    if data not in converted:
        if downgrade is None:
            # The relay's own notices (no DKIM of the sender's to keep): the plain conversion.
            converted[data] = await asyncio.to_thread(to_seven_bit, data)
        else:
            converted[data] = await downgrade(data)
    return converted[data]


async def prepare(
    sub: Submission, ext: Extensions, downgrade: Downgrade | None, converted: dict[bytes, bytes]
) -> Plan:
    """Rule 3: the checks that need no upstream, then the commands for this upstream's
    extensions. ``converted`` keeps a downgraded message for a second attempt."""
    final: dict[str, UpstreamReply] = {}
    smtputf8 = _unsendable(sub, ext, final)
    todo = [r for r in sub.rcpts if r not in final]
    data = sub.data
    eight_bit = not data.isascii()
    if todo and eight_bit and not ext.has("8BITMIME"):
        try:
            data = await _seven_bit(data, downgrade, converted)
            eight_bit = False
        except DowngradeRefused as exc:
            _own(replies.OUT_8BIT, todo, final, str(exc))
            todo = []
    if not todo:
        return Plan(final)
    try:
        mail_params = params.mail_params(
            sub.options, ext, size=len(data), eight_bit=eight_bit, smtputf8=smtputf8
        )
        mail = command.mail_from(sub.mail_from, mail_params)
    except command.UnsafeCommand as exc:
        _own(replies.OUT_BAD_SENDER, todo, final, str(exc))
        return Plan(final)
    plan = Plan(final, mail)
    for rcpt in todo:
        try:
            rcpt_params = params.rcpt_params(sub.rcpt_options.get(rcpt, ()), ext)
            plan.rcpts.append((rcpt, command.rcpt_to(rcpt, rcpt_params)))
        except command.UnsafeCommand as exc:
            _own(replies.OUT_BAD_RCPT, [rcpt], final, str(exc))
    if plan.rcpts:
        plan.payload = command.data_payload(data)
    return plan


def _xforward_commands(conn: Connection, attributes: XForward) -> list[bytes]:
    """Postfix XFORWARD before MAIL, only the names the upstream announced."""
    if not attributes or not conn.extensions.has("XFORWARD"):
        return []
    announced = conn.extensions.words("XFORWARD")
    out = []
    for arguments in xfwd.commands(attributes, announced):
        try:
            out.append(command.xforward(arguments))
        except command.UnsafeCommand:
            continue  # an attribute that cannot be written is not forwarded
    return out


class Transaction:
    """Runs one ``Plan`` on one connection (Rules 1, 2, 4)."""

    def __init__(
        self, conn: Connection, sub: Submission, plan: Plan, timeout: float, notices: Notices
    ) -> None:
        self.conn = conn
        self.sub = sub
        self.plan = plan
        self.timeout = timeout
        self.notices = notices
        self.outcome = GroupOutcome(dict(plan.final))
        self.refused: dict[str, UpstreamReply] = {}  # refused for good at RCPT
        self.accepted: list[str] = []

    @property
    def known(self) -> dict[str, UpstreamReply]:
        """Replies that stay whatever happens next: decided here, or refused for good."""
        return {**self.plan.final, **self.refused}

    async def run(self) -> GroupOutcome:
        if not self.plan.rcpts:
            return self.outcome
        pre = [command.RSET] if self.conn.needs_rset else []
        xforward = _xforward_commands(self.conn, self.sub.xforward)
        try:
            if self.conn.extensions.has("PIPELINING"):
                go = await self._pipelined(pre, xforward)
            else:
                go = await self._lockstep(pre, xforward)
        except UpstreamLost as exc:
            raise NotSent(exc.reason, self.known) from None
        if go:
            await self._message()
        return self.outcome

    def _note_xforward(self, answers: Sequence[ServerReply]) -> None:
        bad = next((a for a in answers if a.code != 250), None)
        if bad is not None:
            self.notices.problem("xforward", f"XFORWARD refused: {bad.text}")

    def _judge_mail(self, reply: ServerReply) -> bool:
        if reply.code == 421:
            raise UpstreamLost(f"upstream closing: {reply.text}")
        if 200 <= reply.code < 300:
            return True
        for rcpt, _ in self.plan.rcpts:
            self.outcome.replies[rcpt] = _reply(reply)
        return False

    def _judge_rcpt(self, rcpt: str, reply: ServerReply) -> None:
        if reply.code == 421:
            raise UpstreamLost(f"upstream closing: {reply.text}")
        if 200 <= reply.code < 300:
            self.accepted.append(rcpt)
            return
        self.outcome.replies[rcpt] = _reply(reply)
        if reply.code >= 500:
            self.refused[rcpt] = _reply(reply)

    async def _pipelined(self, pre: list[bytes], xforward: list[bytes]) -> bool:
        conn = self.conn
        batch = [*pre, *xforward, self.plan.mail, *(c for _, c in self.plan.rcpts), command.DATA]
        conn.needs_rset = True  # until the transaction ends cleanly
        conn.write(b"".join(batch))
        answers = await conn.read(len(batch), self.timeout)
        answers = answers[len(pre) :]
        self._note_xforward(answers[: len(xforward)])
        answers = answers[len(xforward) :]
        mail_ok = self._judge_mail(answers[0])
        if mail_ok:
            for (rcpt, _), reply in zip(self.plan.rcpts, answers[1:-1], strict=True):
                self._judge_rcpt(rcpt, reply)
        data_reply = answers[-1]
        if data_reply.code == 354 and not (mail_ok and self.accepted):
            # Rule 2: the upstream wants a message nobody is to receive: end it empty.
            conn.write(command.END_OF_DATA)
            await conn.read1(self.timeout)
            return False
        if not mail_ok:
            conn.needs_rset = False  # no transaction was opened
            return False
        return self._judge_data(data_reply)

    async def _lockstep(self, pre: list[bytes], xforward: list[bytes]) -> bool:
        conn = self.conn
        for line in pre:
            conn.write(line)
            await conn.read1(self.timeout)
        conn.needs_rset = False
        answers = []
        for line in xforward:
            conn.write(line)
            answers.append(await conn.read1(self.timeout))
        self._note_xforward(answers)
        conn.write(self.plan.mail)
        if not self._judge_mail(await conn.read1(self.timeout)):
            return False
        conn.needs_rset = True
        for rcpt, line in self.plan.rcpts:
            conn.write(line)
            self._judge_rcpt(rcpt, await conn.read1(self.timeout))
        if not self.accepted:
            conn.write(command.RSET)
            await conn.read1(self.timeout)
            conn.needs_rset = False
            return False
        conn.write(command.DATA)
        return self._judge_data(await conn.read1(self.timeout))

    def _judge_data(self, reply: ServerReply) -> bool:
        if reply.code == 354:
            return True
        if reply.code == 421:
            raise UpstreamLost(f"upstream closing: {reply.text}")
        answer = (
            _reply(reply)
            if reply.code >= 400
            else UpstreamReply.own(replies.OUT_PROTOCOL, f"DATA answered {reply.text}")
        )
        for rcpt in self.accepted:
            self.outcome.replies[rcpt] = answer
        return False

    async def _commit(self) -> None:
        """Rule 5."""
        if self.sub.commit is None:
            return
        try:
            await self.sub.commit(list(self.accepted))
        except Exception as exc:
            log.error(
                "in-flight ledger entry not written (%s): reading the reply", type(exc).__name__
            )

    async def _message(self) -> None:
        """The message and its end line, then the reply that decides (Rule 4 from here on)."""
        conn = self.conn
        payload = self.plan.payload
        try:
            if len(payload) <= CHUNK:
                conn.write(payload)
            else:
                view = memoryview(payload)
                for start in range(0, len(payload), CHUNK):
                    conn.write(view[start : start + CHUNK])
                    await conn.drain(self.timeout)
            await self._commit()
            final = await conn.read1(self.timeout)
        except UpstreamLost as exc:
            raise SentUnknown(exc.reason, self.known) from None
        conn.needs_rset = False
        reply = _reply(final)
        ext = conn.extensions
        for rcpt in self.accepted:
            self.outcome.replies[rcpt] = reply
            options = self.sub.rcpt_options.get(rcpt, ())
            if reply.accepted and not ext.has("DSN") and params.wants_success_notice(options):
                self.outcome.relayed.append(rcpt)
