# syntax=docker/dockerfile:1
# Keyward's one image: the API (granian WSGI), the proxy (granian ASGI), the Celery worker
# and beat, the audit sequencer and migrations, chosen by the entrypoint's first argument
# (docker/entrypoint.sh). Runs as a numeric non-root user on a read-only root filesystem
# with a writable /tmp.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Builder: wheels for every runtime dependency, installed into a virtualenv that the final
# stage copies; static files collected once here.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# The runtime dependencies only: the project itself runs from /app, not from site-packages.
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && pip wheel --wheel-dir /wheels --requirement requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --requirement requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools
COPY . /app
WORKDIR /app
# collectstatic imports the settings, which need no secret outside production: the
# embedded default generates throwaway ones in a directory this stage alone keeps.
RUN KEYWARD_DATA_DIR=/tmp/collectstatic KEYWARD_QUIET_EMBEDDED=1 KEYWARD_STATIC_ROOT=/app/static \
       /opt/venv/bin/python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/collectstatic \
    && /opt/venv/bin/python -m compileall -q /app

# Final stage: the interpreter, the virtualenv, the code and the collected static files;
# no compiler, no package manager cache, no pip.
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="Keyward" \
      org.opencontainers.image.description="Self-hosted key management for bring-your-own-key AI products" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# Every path the processes write to is under /tmp (an emptyDir in Kubernetes): HOME for
# libraries that keep state there, TMPDIR, and the data directory that holds Celery beat's
# schedule file. Nothing writes bytecode at run time; it is compiled into the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    KEYWARD_DATA_DIR=/tmp/keyward \
    KEYWARD_STATIC_ROOT=/app/static \
    DJANGO_SETTINGS_MODULE=settings.settings

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=0:0 /app /app
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/keyward-entrypoint
RUN groupadd --system --gid 10001 keyward \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin keyward

WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001
ENTRYPOINT ["/usr/local/bin/keyward-entrypoint"]
CMD ["web"]
