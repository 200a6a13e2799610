"""SMTP in (async edge): the aiosmtpd handler and its extensions, the DATA reader, the
listeners, the rate limit. The only layer where errors become SMTP replies."""
