# syntax=docker/dockerfile:1
# modelrouter container image.
#
#   docker build -t modelrouter .
#   docker run --rm -p 8000:8000 -e API_KEY=change-me -e GROQ_API_KEY=... modelrouter
#
# The image listens on 0.0.0.0:8000, and the gateway refuses a non-loopback address
# without API_KEY, so the container exits at start-up (with a clear message) unless
# API_KEY is set. `docker run ... modelrouter check-config` prints the effective,
# masked configuration; `modelrouter mock-provider --host 0.0.0.0` runs the mock.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# builder: turn the project, and every dependency, into wheels
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# README* is a glob so that the build still works while the project has no README.md.
COPY pyproject.toml LICENSE README* ./
COPY modelrouter ./modelrouter

# The project's own wheel plus wheels for all of its dependencies: the final stage then
# installs offline, from /wheels only, and never sees the sources or the build tools.
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="modelrouter" \
      org.opencontainers.image.description="An actor-based LLM gateway: fallback across providers, strict limits, honest failures." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels modelrouter

# An unprivileged user with no login shell and no home directory.
RUN groupadd --system --gid 10001 modelrouter \
    && useradd --system --uid 10001 --gid modelrouter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin modelrouter

COPY LICENSE /usr/share/doc/modelrouter/LICENSE

WORKDIR /app
USER modelrouter:modelrouter

# Inside a container the gateway must listen on every interface to be reachable.
ENV HOST=0.0.0.0 \
    PORT=8000

EXPOSE 8000

# slim has no curl: ask http://127.0.0.1:8000/health (the port follows PORT if it is
# overridden) with the standard library. urlopen raises on a refused connection, a
# timeout or any non-2xx status, so the exit code is 0 only for a 2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# The gateway drains on SIGTERM (DRAIN_SECONDS, then up to 30 s for in-flight requests):
# give `docker stop` a --time (or compose a stop_grace_period) longer than that.
STOPSIGNAL SIGTERM

ENTRYPOINT ["modelrouter"]
CMD ["serve"]
