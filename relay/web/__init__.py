"""Recipient side: withdrawal, preference and consent pages, pixel gateway, consent API.

``create_app`` (``relay.web.app``) builds the Starlette application that ``relay serve`` runs;
``relay.store.link_store`` holds the records the pipeline writes for it (gateway targets, the
address behind a recipient key).
"""
