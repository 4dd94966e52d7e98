# Curator's service image: `curator serve` on the pinned stack, run by a non-root user.
# Build: docker build -t curator .
# Run:   docker run --rm -p 8000:8000 -v "$PWD/exports:/exports" -v curator-state:/state curator
# The other commands: docker run --rm -v "$PWD/data:/data" curator evaluate --data /data/marketplace
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    CURATOR_MODEL_DIR=/exports \
    CURATOR_DATABASE_URL=sqlite:////state/curator.db \
    CURATOR_HOST=0.0.0.0 \
    CURATOR_PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-compile -r requirements.txt

COPY pyproject.toml README.md ./
COPY towers towers
COPY training training
COPY serving serving
RUN pip install --no-deps --no-build-isolation . \
    && useradd --create-home --uid 10001 curator \
    && mkdir -p /exports /state /data \
    && chown 10001 /exports /state /data

USER 10001
# exports (read by the service), the live state's SQLite file, and datasets for the other commands
VOLUME ["/exports", "/state", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['CURATOR_PORT']}/healthz\", timeout=4)"]
ENTRYPOINT ["curator"]
# host, port, model and database come from the CURATOR_* environment (docs/serving.md)
CMD ["serve"]
