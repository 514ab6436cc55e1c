# syntax=docker/dockerfile:1.7
#
# Cairn, CPU image (linux/amd64 and linux/arm64).
#
#   docker build -t cairn .                                  # with the embedding model + SmolLM2 GGUF
#   docker build -t cairn --build-arg INCLUDE_LLM=false .    # embedding model only (openai generator)
#   docker build -t cairn --build-arg INCLUDE_MODELS=false . # no models: mount them at /opt/cairn/models
#   docker run -p 8000:8000 -v cairn-data:/data cairn
#
# The build stage runs the same `scripts/setup` a developer runs (through scripts/docker-install),
# so apt packages, the ONNX Runtime library and the models come from the same place on a host
# and in the image. The GPU variant is Dockerfile.gpu. See docs/deployment.md.

ARG RUST_VERSION=1.95
# The runtime stage must have the build stage's glibc (or newer): both are Debian bookworm.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG TARGETARCH
# The baseline target of each arch: the image runs on any x86-64 (or arm64) CPU. llama.cpp's
# kernels still use AVX2/AVX-512/VNNI where the CPU has them: `llama-cpu-variants` builds one
# library per instruction-set level and the best one for the CPU is loaded at start
# (docs/configuration.md, `generator.cpu_variant`).
ARG RUSTFLAGS_AMD64=""
ARG RUSTFLAGS_ARM64=""
# `full` = llama (local GGUF answers through llama.cpp) + otel (OTLP traces) + sentry;
# "" = retrieval and the openai generator only.
ARG CARGO_FEATURES=full,llama-cpu-variants
ARG INCLUDE_MODELS=true
ARG INCLUDE_LLM=true
ENV CAIRN_CACHE=/root/.cache/cairn
WORKDIR /src

# Tools and models first: this layer changes only when the set-up scripts change.
COPY scripts/setup scripts/docker-install scripts/
RUN --mount=type=cache,target=/root/.cache/cairn/wheels \
    scripts/docker-install deps

COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    set -eu; \
    case "$TARGETARCH" in \
      amd64) export RUSTFLAGS="$RUSTFLAGS_AMD64" ;; \
      arm64) export RUSTFLAGS="$RUSTFLAGS_ARM64" ;; \
    esac; \
    export CARGO_TARGET_DIR="/build/target/${TARGETARCH:-native}"; \
    cargo build --release --locked --features "$CARGO_FEATURES"; \
    INCLUDE_MODELS="$INCLUDE_MODELS" INCLUDE_LLM="$INCLUDE_LLM" \
      scripts/docker-install stage "$CARGO_TARGET_DIR/release/cairn" /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# tini reaps and forwards signals (SIGTERM -> graceful shutdown that finishes writes);
# curl is for HEALTHCHECK; libgomp1 and libstdc++6 are llama.cpp's and ONNX Runtime's.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini curl ca-certificates libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin cairn \
    && mkdir -p /data \
    && chown cairn:cairn /data

# /opt/cairn/bin/cairn finds /opt/cairn/models on its own (it looks beside the executable and
# its parents); the runtime library lives outside models/ so a models volume cannot hide it.
COPY --from=build /out/ /opt/cairn/

LABEL org.opencontainers.image.title="cairn" \
      org.opencontainers.image.description="Hybrid search and cited answers over your documents, in one binary" \
      org.opencontainers.image.licenses="Apache-2.0"

# Configuration: CAIRN_* variables (nested keys with __), or a cairn.toml mounted anywhere
# and named by CAIRN_CONFIG. CAIRN_DATA_DIR makes `docker exec ... cairn keys create` use /data too.
ENV PATH=/opt/cairn/bin:$PATH \
    ORT_DYLIB_PATH=/opt/cairn/lib/libonnxruntime.so \
    CAIRN_DATA_DIR=/data \
    CAIRN_LOG__FORMAT=json
WORKDIR /opt/cairn
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# /health/ready checks the store, the keyword index, the embedder and the generator. The
# server binds only after the models are loaded, hence the start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "curl -fsS --max-time 8 -o /dev/null \"${CAIRN_HEALTHCHECK_URL:-http://127.0.0.1:8000/health/ready}\" || exit 1"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# A non-loopback address needs authentication (or --insecure): API keys by default. Create the
# first key with: docker exec -it <container> cairn keys create --name admin --tier premium \
#   --scopes search,query,ingest,admin
CMD ["cairn", "serve", "--addr", "0.0.0.0:8000", "--data-dir", "/data", "--auth", "api_key"]
