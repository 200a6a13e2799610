"""The pure core: parse, transfer encodings, classify, policy tables, decide, rewrite, footer,
links, ESP controls, DKIM re-sign; ``filtering`` conducts them. No I/O: nothing here imports
asyncio, sockets, Redis or an SMTP/HTTP library (tests/test_architecture.py keeps it so)."""
