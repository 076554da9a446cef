# The GPU worker image: a CUDA base; torch is the CUDA build pip chooses (no CPU pin).
#   docker build -f docker/worker-gpu.Dockerfile -t unlearn-worker-gpu .
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY unlearning ./unlearning
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install . \
    && useradd --create-home --uid 1001 unlearn
COPY docker/entrypoint.sh /entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH UNLEARN_DATA_DIR=/home/unlearn/var

USER unlearn
ENTRYPOINT ["/entrypoint.sh"]
# One process per GPU: the solo pool creates CUDA state in the worker process only.
CMD ["worker", "--queues", "deletions,training", "--pool", "solo"]
