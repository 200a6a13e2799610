"""Redis (async edge): consent events, state and proofs, the delivery ledger, the audit log and
its journal, link records, the one module that knows every key, and which server to talk to."""
