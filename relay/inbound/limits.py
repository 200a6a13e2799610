"""How many SMTP connections a listener holds: at most ``[smtp] max_connections`` open ones,
and at most ``max_connections_per_client`` from one client address.

Stage: async edge (SMTP transport). Input: accepted connections. Output: admitted or not.

Rule 1: a connection beyond either cap is answered ``421 4.7.0`` at once and closed, before the
        greeting: a flood of idle or slow SMTP clients can hold no more descriptors than the
        cap, so the web listener of the same process (which caps itself the same way) and
        the other SMTP clients keep being served; a refused client retries later (RFC 5321
        4.2.5: 421 is temporary).
Rule 2: the client is the TCP peer; behind a PROXY-protocol load balancer (``proxy_protocol``)
        the per-client cap is not applied to the balancer's address (it carries everyone) but
        the total cap is.
Rule 3: counts are per listener and per relay process (``--workers N`` gives each its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relay.ops.connections import OpenConnections

log = logging.getLogger("relay.inbound.limits")


@dataclass
class ConnectionLimits(OpenConnections):
    max_connections: int  # 0 = no cap
    per_client: int  # 0 = no cap
    per_client_applies: bool = True  # False behind a PROXY-protocol balancer (Rule 2)
    open: int = 0
    refused: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def admit(self, client: str) -> bool:
        over_total = bool(self.max_connections) and self.open >= self.max_connections
        mine = self.held_by(client)
        over_client = self.per_client_applies and bool(self.per_client) and mine >= self.per_client
        if over_total or over_client:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                what = "the listener's" if over_total else f"{client}'s"
                log.warning(
                    "SMTP connection refused: %s connection cap reached (%d open, %d refused"
                    " so far)",
                    what,
                    self.open,
                    self.refused,
                )
            return False
        self.take(client)
        return True
