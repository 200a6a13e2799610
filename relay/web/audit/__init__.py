"""The auditors' workspace at ``/audit/`` (SPEC section 3): see what was decided, and prove it.

Stage: async edge (HTTP), mounted by ``relay.web.app`` on the web listener when ``[audit_ui]
users`` is not empty (no auditor configured: no workspace, ``/audit/`` is a 404).
Input: GET requests of signed-in auditors (``workspace``), one POST (the search form).
Output: pages answering an inspector's three questions: the consent behind a tracked email
(``drill``), every email tracked without consent (``lists``), and that withdrawals took effect
(``timeline``); the per-day counts with charts (``overview``).

Rule 1: read only: no page changes the decision log or the consent store.
Rule 2: pages run no JavaScript and load nothing from elsewhere; charts are inline SVG with
        their numbers in a table beside them.
"""
