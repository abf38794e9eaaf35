# Parley as a container: `docker build -t parley .`, then
# `docker run -d --name parley --env-file .env -v parley-data:/data --stop-timeout 30 parley`.
# README, "Run it as a service", says more. Configuration comes from the environment at run
# time (--env-file, compose's env_file); nothing from .env is built into the image.

# Build stage: install Parley and its dependencies into a venv that has no pip of its own.
# Every dependency ships wheels, so no compiler is needed; whatever the build pulls in
# (setuptools, the source tree) stays in this stage. Both stages use the same base, so the
# venv's interpreter link (/usr/local/bin/python3.11) is valid in the second.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY storage ./storage
COPY bots ./bots
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install .

# Run stage: the base image without its packaging tools, a system user, and the venv.
FROM python:3.11-slim
# A fixed uid and gid, so a host folder bind-mounted on /data can be given to them
# (chown 10001:10001). Only /data is theirs; the code stays root's and read-only to them.
# The base image's own pip and setuptools go too: the venv never used them, and an image
# that cannot install packages has nothing for a scanner to flag in them.
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin parley \
    && install --directory --owner=parley --group=parley --mode=0750 /data \
    && python -m pip uninstall --yes pip setuptools wheel
COPY --from=build /opt/venv /opt/venv
# ffmpeg and ffprobe convert the voice notes the transcription endpoints do not take as they are
# (an iPhone's CAF, AMR) and measure audio whose length the platform did not state (without them
# those get a line asking for a voice note instead: core/audio/ffmpeg.py). Static builds from a
# pinned image: two files, no package manager run in this stage.
COPY --from=mwader/static-ffmpeg:7.1 /ffmpeg /ffprobe /usr/local/bin/
# The database lives on the volume; the working directory holds no .env, so the environment
# is the only configuration. METRICS_ADDR serves /healthz (used below) and /metrics.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////data/parley.db \
    METRICS_ADDR=0.0.0.0:9108
WORKDIR /app
# By number, so a runtime can tell it is not root without reading /etc/passwd
# (Kubernetes' runAsNonRoot).
USER 10001:10001
# Declared after /data was created and given to the user, so a new named volume starts with
# that owner and mode.
VOLUME ["/data"]
EXPOSE 9108
# The slim image has no curl: the image's own Python asks /healthz on the port METRICS_ADDR
# names (200: every bot connected and the database answers; anything else exits 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['METRICS_ADDR'].rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3)"]
# SIGTERM is Parley's graceful stop; give it more than SHUTDOWN_GRACE_SECONDS + 16 s (docker
# stop waits 10 s by default, so use --stop-timeout 30 or compose's stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["parley", "run"]
