# syntax=docker/dockerfile:1
# The gateway's image: `make image` (docker build -t llm-gateway:<version> .). Two stages: the first builds a
# virtualenv from the pinned lock and the project's wheel; the second is the slim runtime with only that
# virtualenv, a non-root user and no compiler, pip cache or source tree.
# Pin the base by digest for releases: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/gateway
WORKDIR /src
# Dependencies first, exactly as locked: this layer is reused until the lock changes.
COPY deploy/requirements.lock ./requirements.lock
RUN /opt/gateway/bin/pip install --only-binary=:all: --requirement requirements.lock
# The project as a wheel. gateway/config/schemas/providers.schema.json is a symlink into config/: with config/ in the
# build context, building the wheel stores the real file.
COPY pyproject.toml README.md ./
COPY config/ config/
COPY gateway/ gateway/
RUN /opt/gateway/bin/pip install --no-deps . \
    && cd / && /opt/gateway/bin/python -c "from gateway.config.providers import load_schema; load_schema()" \
    && test ! -L "$(/opt/gateway/bin/python -c 'import gateway, os; print(os.path.dirname(gateway.__file__))')/config/schemas/providers.schema.json"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROVIDERS_FILE=/etc/llm-gateway/providers/providers.yaml
# The same numeric ids the Helm chart runs as (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/gateway /opt/gateway
# A default table so `docker run` works; the chart mounts its ConfigMap over this directory.
COPY providers.yaml /etc/llm-gateway/providers/providers.yaml
WORKDIR /
USER 10001:10001
# 8080: the API (SERVER_PORT); 9464: Prometheus metrics when TELEMETRY_ENABLE=true (TELEMETRY_METRICS_PORT).
EXPOSE 8080 9464
# SIGTERM starts the graceful drain (SERVER_DRAIN_TIMEOUT); a second one stops at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "gateway"]
