"""consent-relay: an outbound SMTP relay that makes email tracking pixels lawful."""

__version__ = "0.1.0"
