# Herald container image: one image for every role (`herald serve | gateway | trigger-api`).
#
#   scripts/build-image.sh                     # docker build with the version and revision labels
#   docker run --rm --network host herald:0.1.0 serve           # all-in-one, in memory, port 6001
#   docker run --rm --network host herald:0.1.0 gateway --redis-url redis://127.0.0.1:6379/0
#
# Layers: the dependencies (from pyproject.toml alone) are installed before the code is copied, into
# a venv of their own, and Herald's packages into a directory beside it. A code change rebuilds only
# the code layers, in the build stage and in the image. The runtime stage has no pip, setuptools or
# wheel (not even the base image's), runs as the unprivileged user 10001 (numeric, so Kubernetes'
# runAsNonRoot can verify it) and writes nothing to its root filesystem (runs with --read-only).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# /opt/tools: pip and setuptools for building. /opt/herald: the runtime venv, without pip; a .pth
# file puts /opt/herald-app (Herald's own packages) on its path.
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install -q "setuptools>=77" wheel \
    && python -m venv --without-pip /opt/herald \
    && echo /opt/herald-app > "$(/opt/herald/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/herald-app.pth"
WORKDIR /src
# Dependency layer: rebuilt only when pyproject.toml changes. Every dependency ships manylinux wheels
# (uvloop, httptools, hiredis, orjson, msgpack, asyncpg), so no compiler. The image includes the
# database drivers of --apps-db (the postgres and mysql extras).
COPY pyproject.toml ./
RUN /opt/tools/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres'] + p['optional-dependencies']['mysql']))" > requirements.txt \
    && /opt/tools/bin/pip --python /opt/herald/bin/python install -q -r requirements.txt
# Code layer (.dockerignore lets in only the packages, README.md and LICENSE).
COPY . ./
RUN /opt/tools/bin/pip wheel -q --no-deps --no-build-isolation -w /tmp/dist . \
    && /opt/tools/bin/pip --python /opt/herald/bin/python install -q --no-deps --target /opt/herald-app /tmp/dist/*.whl \
    && PATH=/opt/herald-app/bin:/opt/herald/bin herald --version

FROM python:3.11-slim
ENV PATH=/opt/herald-app/bin:/opt/herald/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Nothing installs packages at run time: remove the base image's pip, setuptools and wheel (Debian
# packages in a Debian-built base, pip-installed in the official one).
RUN if dpkg-query -W -f='${Status}' python3-pip 2>/dev/null | grep -q 'ok installed'; then \
        apt-get purge -y -qq --auto-remove python3-pip python3-setuptools python3-wheel >/dev/null; \
    else \
        python -m pip uninstall -y -q pip setuptools wheel; \
    fi \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin herald
COPY --from=build /opt/herald /opt/herald
COPY --from=build /opt/herald-app /opt/herald-app
USER 10001:10001
EXPOSE 6001
# GET / answers 200 while the process serves (readiness, GET /ready, turns 503 during the drain).
# It asks 127.0.0.1 on HERALD_PORT: set the port through that variable rather than --port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/' % os.environ.get('HERALD_PORT', '6001'), timeout=2)"]
# herald runs as PID 1: uvicorn installs SIGTERM/SIGINT handlers, and SIGTERM starts the drain
# (readiness off, new handshakes refused with 4100, open sockets closed with 4200 over
# HERALD_DRAIN_SECONDS), so `docker stop` (10 s by default) and Kubernetes both drain cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
# Last, so a new revision or date changes only the image's metadata. scripts/build-image.sh sets them.
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="Herald" \
      org.opencontainers.image.description="Self-hosted, horizontally scaled Pusher Channels protocol server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="Herald maintainers"
