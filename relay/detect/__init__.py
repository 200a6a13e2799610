"""Tracker detection (pure): HTML and CSS scanning, vendor signatures, heuristics -> tracker
candidates with exact spans. No I/O (tests/test_architecture.py keeps it so)."""
