# The API image: the CPU build of torch, no CUDA. It also runs `migrate` and the CPU worker
# (`worker --queues deletions`). Build from the repository root:
#   docker build -f docker/api.Dockerfile -t unlearn-api .

# --- build: a virtual environment in /opt/venv, copied alone into the runtime stage ---------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# PyPI's Linux x86_64 torch wheel is the CUDA build; this index serves the CPU build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
WORKDIR /src

# Exactly the lock (requirements/, pinned with hashes): torch first, in its own layer, from
# the CPU index; then the rest; then the project itself, built with the locked setuptools.
COPY requirements/torch-cpu.txt requirements/run.txt ./requirements/
RUN pip install --require-hashes --no-deps --index-url "$TORCH_INDEX_URL" \
        -r requirements/torch-cpu.txt
RUN pip install --require-hashes --no-deps -r requirements/run.txt
COPY pyproject.toml README.md ./
COPY unlearning ./unlearning
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation .

# --- runtime ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    UNLEARN_DATA_DIR=/var/lib/unlearn UNLEARN_ARTIFACTS_DIR=/var/lib/unlearn/artifacts \
    UNLEARN_HOST=0.0.0.0 UNLEARN_PORT=8000 UNLEARN_HEALTH_PORT=8001
# One UID in every image: the shared artifacts volume takes this directory's owner.
RUN groupadd --system --gid 10001 unlearn \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --create-home unlearn \
    && mkdir -p /var/lib/unlearn/artifacts \
    && chown -R 10001:10001 /var/lib/unlearn
COPY --from=build /opt/venv /opt/venv
# Mode 0755 comes from git (no --chmod: the classic builder of docker-compose 1.29 lacks it).
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh

USER 10001:10001
WORKDIR /var/lib/unlearn
EXPOSE 8000
# Role-aware: /healthz on 8000 for `serve`; on 8001 (a thread that answers while a job runs)
# for `worker` and `housekeeper`.
HEALTHCHECK --interval=15s --timeout=20s --start-period=60s --retries=4 \
    CMD ["/usr/local/bin/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["serve"]
