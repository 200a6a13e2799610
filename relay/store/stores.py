"""The relay's stores on one Redis client, wired the same way for ``relay serve`` and tests.

Stage: async edge (Redis). Input: the settings, the Redis URL in use, the rules digest.
Output: consent store, audit log, ledger and link store sharing one client, one wait policy
(``replicated.Durability``) and one write journal (``writeback``), with the journal's replay
handlers.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.core.controllers import Controllers
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import RedisConsentStore
from relay.store.ledger import Ledger
from relay.store.link_store import LinkStore
from relay.store.redis_conn import AsyncRedis, async_client
from relay.store.redis_keys import Keys
from relay.store.replicated import Durability
from relay.store.writeback import Handler, WriteBack


@dataclass(frozen=True)
class Stores:
    client: AsyncRedis
    keys: Keys
    consent: RedisConsentStore
    audit: AuditLog
    ledger: Ledger
    links: LinkStore
    writeback: WriteBack

    @property
    def handlers(self) -> dict[str, Handler]:
        """What the write journal's replay calls for each op."""
        return {
            "ledger": self.ledger.replay_records,
            "forget": self.ledger.replay_forgets,
            "links": self.links.replay,
            "consent": self.consent.replay_events,
        }


def open_stores(
    settings: Settings,
    redis_url: str,
    rules_digest: str = "",
    controllers: Controllers | None = None,
    identity: str | None = None,
) -> Stores:
    keys = Keys(settings.redis.prefix)
    client = async_client(redis_url, settings.redis)
    durability = Durability.for_url(redis_url, settings.redis)
    writeback = WriteBack(settings.redis.journal, keep=settings.redis.journal_keep)
    timeout = settings.redis.timeout
    consent = RedisConsentStore(
        client,
        keys,
        settings.address_key,
        settings.consent,
        rules_digest=rules_digest,
        timeout=timeout,
        durability=durability,
        writeback=writeback,
        controllers=controllers,
    )
    audit = AuditLog(
        client,
        keys,
        settings.audit.journal,
        timeout=timeout,
        retention_days=settings.audit.retention_days,
        durability=durability,
    )
    ledger = Ledger(
        client, keys, timeout=timeout, durability=durability, writeback=writeback,
        identity=identity,
    )  # fmt: skip
    links = LinkStore(client, keys, timeout=timeout, durability=durability, writeback=writeback)
    return Stores(client, keys, consent, audit, ledger, links, writeback)
