# The MLWatcher application image: one image for every role (topic initialiser, stream
# worker, Parquet and Anodot sinks, report). The role is the container's command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The extras of the image's roles (pyproject.toml): topics + worker, the sinks, the report.
# A smaller image for one role: docker build --build-arg EXTRAS=sinks .
ARG EXTRAS=worker,sinks,report

WORKDIR /app
# Dependencies first, so editing the code does not invalidate the dependency layer.
COPY pyproject.toml README.md ./
RUN mkdir -p mlwatcher && touch mlwatcher/__init__.py \
    && pip install ".[${EXTRAS}]" \
    && pip uninstall -y mlwatcher
COPY mlwatcher ./mlwatcher
RUN pip install --no-deps . && rm -rf /app/build

# Unprivileged user; /data holds the Parquet output (a volume in docker-compose.yml).
RUN useradd --create-home --uid 10001 mlwatcher \
    && mkdir -p /data/parquet /data/report \
    && chown -R mlwatcher:mlwatcher /data
USER mlwatcher
WORKDIR /data

# The worker's /health + /metrics (6066) and the Prometheus sink's /metrics (6070); both bound
# to 0.0.0.0 by the compose file.
EXPOSE 6066 6070

CMD ["mlwatcher", "--help"]
