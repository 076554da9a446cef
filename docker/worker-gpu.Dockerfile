# The GPU worker image: a CUDA runtime base and the CUDA build of torch for the same CUDA
# (never constraints/cpu.txt). Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t unlearn-worker-gpu .
# CUDA 13 needs an NVIDIA driver >= 580 and a Turing or newer GPU. For older ones:
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# --- build: a virtual environment in /opt/venv, copied alone into the runtime stage ---------
FROM ${CUDA_IMAGE} AS build

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Ubuntu's archive moves package versions within a release: the release is the pin (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src

# The torch build for the base image's CUDA (the image chooses it, and the CUDA libraries it
# needs); keep TORCH_VERSION equal to constraints/cpu.txt.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"
# Everything else exactly as locked (requirements/run.txt, with hashes; it holds no torch);
# then the project itself, built with the locked setuptools.
COPY requirements/run.txt ./requirements/
RUN pip install --require-hashes --no-deps -r requirements/run.txt
COPY pyproject.toml README.md ./
COPY unlearning ./unlearning
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation .

# --- runtime ---------------------------------------------------------------------------
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    UNLEARN_DATA_DIR=/var/lib/unlearn UNLEARN_ARTIFACTS_DIR=/var/lib/unlearn/artifacts
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 unlearn \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --create-home unlearn \
    && mkdir -p /var/lib/unlearn/artifacts \
    && chown -R 10001:10001 /var/lib/unlearn
COPY --from=build /opt/venv /opt/venv
# Mode 0755 comes from git (no --chmod: the classic builder of docker-compose 1.29 lacks it).
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh

USER 10001:10001
WORKDIR /var/lib/unlearn
# The worker's /healthz on UNLEARN_HEALTH_PORT: a thread answers while a job trains.
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=4 \
    CMD ["/usr/local/bin/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
# One process per GPU: the solo pool keeps the CUDA state in the worker process itself. It
# consumes the queues of its CUDA compute profile (`unlearn profile`), training and passes.
ENV UNLEARN_DEVICE=cuda UNLEARN_HEALTH_PORT=8001
CMD ["worker", "--queues", "deletions,training", "--pool", "solo"]
