# The tsmindex application image: the API (`tsmindex api`), the Celery workers (`tsmindex worker`) and
# one-off commands (`tsmindex db upgrade`, `tsmindex apikey create`). CPU PyTorch by default; for CUDA
# workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The glibc allocator setting and OpenMP wait policy of workers/allocator.py (README "Threads").
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 OMP_WAIT_POLICY=PASSIVE

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --uid 10001 tsmindex

WORKDIR /app
# torch first, from its own index, so the layer is reused while the code changes.
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
COPY pyproject.toml README.md ./
COPY services services
COPY workers workers
COPY model_store model_store
RUN pip install .

USER tsmindex
ENV TSMINDEX_DATA_DIR=/home/tsmindex/var
EXPOSE 8000 9101
CMD ["tsmindex", "api", "--host", "0.0.0.0", "--port", "8000"]
