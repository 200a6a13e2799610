"""Single-use form nonces of the pages (Rule 2 of ``relay.web.pages``).

Stage: async edge (Redis). A GET writes a random nonce bound to the link's token id (kept
``NONCE_TTL`` seconds); the first POST claims it atomically with the outcome it records, a
second POST with it replays that outcome, a foreign or unknown nonce is refused.
"""

from __future__ import annotations

import secrets

from relay.core.links import TokenClaims
from relay.web.context import WebContext

NONCE_TTL = 7200  # seconds a page's form stays usable

# KEYS[1]: the nonce. ARGV: token id, outcome summary.
# Returns {1, summary} first use (claimed), {2, stored summary} replay, {0, ""} refused.
CLAIM_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return {0, ''} end
if v == ARGV[1] then
  redis.call('SET', KEYS[1], 'used|' .. ARGV[1] .. '|' .. ARGV[2], 'KEEPTTL')
  return {1, ARGV[2]}
end
local prefix = 'used|' .. ARGV[1] .. '|'
if string.sub(v, 1, string.len(prefix)) == prefix then
  return {2, string.sub(v, string.len(prefix) + 1)}
end
return {0, ''}
"""


async def new_nonce(ctx: WebContext, claims: TokenClaims) -> str:
    nonce = secrets.token_urlsafe(18)
    await ctx.redis.set(ctx.keys.form_nonce(nonce), claims.token_id, ex=NONCE_TTL)
    return nonce


async def claim_nonce(
    ctx: WebContext, nonce: str, claims: TokenClaims, summary: str
) -> tuple[int, str]:
    if not nonce or len(nonce) > 64:
        return 0, ""
    script = ctx.redis.register_script(CLAIM_LUA)
    result = await script(keys=[ctx.keys.form_nonce(nonce)], args=[claims.token_id, summary])
    status, stored = int(result[0]), result[1]
    return status, stored.decode() if isinstance(stored, bytes) else str(stored)


async def release_nonce(ctx: WebContext, nonce: str, claims: TokenClaims) -> None:
    """Give the nonce back after a failed recording, so the visitor can simply retry."""
    await ctx.redis.set(ctx.keys.form_nonce(nonce), claims.token_id, ex=NONCE_TTL)
