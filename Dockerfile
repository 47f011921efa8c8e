# The service image: API (`events serve`) and worker (`events worker`) share it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY ingest ingest
COPY pipeline pipeline
COPY storage storage
COPY bench bench
COPY gunicorn.conf.py ./
RUN pip install . && useradd --system --uid 10001 events
USER events
EXPOSE 8000
ENV EVENTS_BIND=0.0.0.0:8000
CMD ["events", "serve"]
