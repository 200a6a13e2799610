"""The routes of the auditors' workspace (the package docstring says what each module does).

Stage: async edge (HTTP): the table of ``/audit/`` paths, mounted by ``relay.web.app``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from relay.web.audit import drill, lists, overview
from relay.web.audit.workspace import Workspace, protected

_GET = ["GET", "HEAD"]


def routes() -> list[BaseRoute]:
    return [
        Route("/audit/", protected(overview.overview), methods=_GET),
        Route("/audit/records", protected(lists.records), methods=_GET),
        Route("/audit/without-consent", protected(lists.without_consent), methods=_GET),
        Route("/audit/m/{mkey}", protected(drill.message), methods=_GET),
        Route("/audit/r/{rkey}", protected(drill.recipient), methods=_GET),
        Route("/audit/r/{rkey}/proof/{event_id}", protected(drill.proof), methods=_GET),
        Route("/audit/find", protected(drill.find), methods=["POST"]),
    ]


__all__ = ["Workspace", "routes"]
