# The authgate image: the `authgate` command (authz server, config tools).
# Used by docker-compose.yaml as `authgate authz -c /config/config.yaml --listen 0.0.0.0:9191`.
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
        --shell /usr/sbin/nologin authgate
USER 10001:10001

EXPOSE 9191
ENTRYPOINT ["authgate"]
CMD ["--help"]
