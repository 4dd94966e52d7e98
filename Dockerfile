# Curator image: the `curator` command (datasets, evaluation) on the pinned stack.
# Build: docker build -t curator .
# Run:   docker run --rm -v "$PWD/data:/data" curator evaluate --data /data/marketplace
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-compile -r requirements.txt

COPY pyproject.toml README.md ./
COPY towers towers
COPY training training
COPY serving serving
RUN pip install --no-deps --no-build-isolation . \
    && useradd --create-home --uid 10001 curator

USER 10001
VOLUME ["/data"]
ENTRYPOINT ["curator"]
CMD ["--help"]
