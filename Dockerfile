# The authgate image: the `authgate` command (authz server, config tools).
# Used by docker-compose.yaml as `authgate authz -c /config/config.yaml --listen 0.0.0.0:9191`
# and by deploy/kubernetes/authz.yaml. Health checks use the image's Python (no curl here):
#   python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/readyz', timeout=2)"
# (exits non-zero unless `metrics_address` answers 200).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && cd / && rm -rf /build
WORKDIR /

RUN groupadd --system --gid 10001 authgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin authgate \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/authgate
# The embedded session store (sessions.db) when the config names no other place; a volume in
# docker-compose.yaml. Replicas use Redis instead (deploy/kubernetes).
ENV STATE_DIRECTORY=/var/lib/authgate
USER 10001:10001

# 9191: ext_authz gRPC; 9090: /metrics, /healthz, /readyz (metrics_address in the config).
EXPOSE 9191 9090
ENTRYPOINT ["authgate"]
CMD ["--help"]
