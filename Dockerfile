# consent-relay container: slim Python, non-root, config and local rules mounted.
#   docker build -t consent-relay .
#   docker run -p 2525:2525 -p 8025:8025 -v relay-data:/srv/relay/var \
#              -v $PWD/config.toml:/etc/relay/config.toml:ro \
#              -v $PWD/rules.local:/srv/relay/rules.local:ro -e RELAY_LINK_KEY=... consent-relay
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 RELAY_CONFIG=/etc/relay/config.toml
WORKDIR /srv/relay

COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /srv/relay relay \
 && mkdir -p /srv/relay/var /srv/relay/rules.local /etc/relay \
 && chown relay /srv/relay/var
COPY deploy/config.container.toml /etc/relay/config.toml
# Consent proofs, the audit journal and the embedded Redis's data live here: keep them on a
# volume, or a recreated container loses them (docker run -v relay-data:/srv/relay/var ...).
VOLUME ["/srv/relay/var"]

USER relay
# 2525: SMTP submission from applications; 8025: recipients' pages, pixel gateway, API, metrics.
EXPOSE 2525 8025
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=4); sys.exit(0)"
ENTRYPOINT ["relay"]
CMD ["serve", "--workers", "2"]
