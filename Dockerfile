# syntax=docker/dockerfile:1
#
# The streamcalc worker image. Build from the repository root:
#   docker build -t streamcalc:0.1.0 .
# Run a worker (the graph is loaded separately, with `streamcalc graph load`):
#   docker run --rm -e STREAMCALC_REDIS_URL=redis://redis:6379/0 -p 9100:9100 streamcalc:0.1.0
#
# tests/test_deploy.py replays the `pip` steps, the ENTRYPOINT and the
# HEALTHCHECK of this file outside Docker: keep each of them one simple line.

ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: build the wheel. Only the files the wheel needs are copied.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamcalc ./streamcalc
RUN pip wheel --no-deps --wheel-dir /dist .

# Stage 2: the runtime image. Only the installed wheel and its dependencies.
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    STREAMCALC_METRICS_PORT=9100 \
    STREAMCALC_LOG_FORMAT=json
RUN groupadd --system --gid 10001 streamcalc && useradd --system --uid 10001 --gid streamcalc --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin streamcalc
# The wheel is bind-mounted from the builder, so it never lands in a layer.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist pip install --no-cache-dir /dist/streamcalc-*.whl
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 9100
# python:*-slim has no curl: probe /healthz with the standard library. An HTTP
# error (503: Redis unreachable or worker stuck) or no answer raises, exit 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMCALC_METRICS_PORT', '9100'), timeout=3)"]
# SIGTERM (docker stop, Kubernetes) makes the worker finish and acknowledge its
# batch, then exit 0. Options go after the image name: `... streamcalc:0.1.0 --processes 4`.
ENTRYPOINT ["streamcalc", "worker"]
