# The service image: API (`events serve`), worker (`events worker`) and compactor
# (`events compact --every`) share it. Slim base, pinned dependencies, non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --create-home events \
    && mkdir -p /data/lake \
    && chown events /data/lake

WORKDIR /app
# Dependencies first (exact versions), so code changes do not rebuild this layer.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md gunicorn.conf.py ./
COPY core core
COPY ingest ingest
COPY pipeline pipeline
COPY storage storage
COPY analytics analytics
COPY importer importer
COPY service service
COPY bench bench
RUN pip install --no-deps .

USER events
ENV EVENTS_BIND=0.0.0.0:8000 \
    EVENTS_LAKE_DIR=/data/lake
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["events", "serve"]
