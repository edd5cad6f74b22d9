# TorchServe with the tsmindex handler. The model archive is mounted at /models/tsm.mar (build it
# with `tsmindex model build --checkpoint <published TSM-R50 URL>`); see README "Published weights".
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The glibc allocator setting and OpenMP wait policy of workers/allocator.py (README "Threads").
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 OMP_WAIT_POLICY=PASSIVE

RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --uid 10001 tsmindex

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
COPY pyproject.toml README.md ./
COPY services services
COPY workers workers
COPY model_store model_store
# onnx: ONNX Runtime for int8 archives (`tsmindex model build --int8-model`).
RUN pip install ".[serve,onnx]"
COPY infra/torchserve infra/torchserve
COPY infra/docker/torchserve-entrypoint.sh /usr/local/bin/torchserve-entrypoint.sh

USER tsmindex
# Listen on every interface of the container; compose publishes the management port on loopback only.
ENV TSMINDEX_TORCHSERVE_INFERENCE_URL=http://0.0.0.0:8080 \
    TSMINDEX_TORCHSERVE_MANAGEMENT_URL=http://0.0.0.0:8081 \
    TSMINDEX_TORCHSERVE_METRICS_URL=http://0.0.0.0:8082
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/torchserve-entrypoint.sh"]
