"""Operations: Prometheus metrics, readiness checks, log formatting."""
