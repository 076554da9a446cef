# The API image: CPU torch only, no CUDA. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t unlearn-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Where the CPU build of torch comes from: a package index that serves CPU wheels.
ARG TORCH_INDEX_URL=""
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY constraints ./constraints
COPY unlearning ./unlearning
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
    && pip install -c constraints/cpu.txt . \
    && useradd --create-home --uid 1000 unlearn
COPY docker/entrypoint.sh /entrypoint.sh

USER unlearn
ENV UNLEARN_HOST=0.0.0.0 UNLEARN_DATA_DIR=/home/unlearn/var
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["/entrypoint.sh"]
CMD ["serve"]
