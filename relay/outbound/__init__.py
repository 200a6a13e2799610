"""SMTP out (async edge): pooled upstream transactions, the file outbox, failure notices."""
