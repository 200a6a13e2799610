"""Connections open on one listener, in all and per client address: what the SMTP and the web
listeners' connection caps count (``relay.inbound.limits``, ``relay.web.limits``).

Stage: ops (in-process counters). Rule 1: ``take`` once a connection is admitted (a listener
that learns the client later, the web one behind a PROXY header, counts ``open`` and the client
in two steps), ``release`` once per connection when it closes; a client's entry goes when its
last one closes, so the table holds only clients with open connections ("" has none).
"""

from __future__ import annotations


class OpenConnections:
    """Mixed into a listener's limits dataclass, which declares these two fields."""

    open: int
    by_client: dict[str, int]

    def held_by(self, client: str) -> int:
        return self.by_client.get(client, 0)

    def take(self, client: str) -> None:
        self.open += 1
        self.by_client[client] = self.held_by(client) + 1

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)
