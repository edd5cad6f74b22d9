# TorchServe with the tsmindex handler on NVIDIA GPUs: fp16 + channels_last batches of 16 (the
# handler's CUDA defaults). Run it through docker-compose.gpu.yml, which reserves the GPU; the host
# needs the NVIDIA driver and the NVIDIA Container Toolkit. The torch wheels carry their own CUDA
# and cuDNN, so the base image only needs the driver's libraries, which the toolkit mounts.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 OMP_WAIT_POLICY=PASSIVE \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility,video

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN useradd --system --create-home --uid 10001 tsmindex

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
COPY pyproject.toml README.md ./
COPY services services
COPY workers workers
COPY model_store model_store
RUN pip install ".[serve]"
COPY infra/torchserve infra/torchserve
COPY infra/docker/torchserve-entrypoint.sh /usr/local/bin/torchserve-entrypoint.sh

USER tsmindex
ENV TSMINDEX_TORCHSERVE_INFERENCE_URL=http://0.0.0.0:8080 \
    TSMINDEX_TORCHSERVE_MANAGEMENT_URL=http://0.0.0.0:8081 \
    TSMINDEX_TORCHSERVE_METRICS_URL=http://0.0.0.0:8082
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/torchserve-entrypoint.sh"]
