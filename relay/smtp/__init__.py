"""SMTP protocol vocabulary shared by both directions: pure parsing and rendering, no I/O.

``inbound`` reads these from clients and ``outbound`` writes them to the upstream; keeping them
here (rather than in either edge) is what keeps the two edges from importing each other.
"""
