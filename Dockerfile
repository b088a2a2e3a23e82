# Herald container image: one image for every role (`herald serve | gateway | trigger-api`).
#
#   docker build -t herald:0.1.0 .
#   docker run --rm -p 6001:6001 herald:0.1.0 serve                      # all-in-one, in memory
#   docker run --rm herald:0.1.0 gateway --redis-url redis://redis:6379/0
#
# The runtime stage runs as the unprivileged user 10001 (numeric, so Kubernetes' runAsNonRoot can
# verify it) and writes nothing to its root filesystem, so it runs with readOnlyRootFilesystem.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtualenv at the same path in both stages, so its entry-point scripts work after the copy.
RUN python -m venv /opt/herald
WORKDIR /src
# Every dependency ships manylinux wheels (uvloop, httptools, hiredis, orjson, msgpack), so no compiler.
COPY pyproject.toml README.md ./
COPY herald ./herald
COPY gateway ./gateway
COPY trigger_api ./trigger_api
COPY shared ./shared
RUN /opt/herald/bin/pip install . \
    && /opt/herald/bin/herald --help >/dev/null

FROM python:3.11-slim
ENV PATH=/opt/herald/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin herald
COPY --from=build /opt/herald /opt/herald
USER 10001:10001
EXPOSE 6001
# herald runs as PID 1: uvicorn installs SIGTERM/SIGINT handlers, and SIGTERM starts the drain
# (readiness off, new handshakes refused with 4100, open sockets closed with 4200 over
# HERALD_DRAIN_SECONDS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
