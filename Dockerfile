# The moe-cluster image: every server and the tools the Kubernetes manifests
# (deploy/k8s) run, in /usr/local/bin, as user 65532.
#   docker build -t moe-cluster:dev .
#
# Stage 1 builds with the Debian 12 packages of tools/install_deps.sh;
# stage 2 keeps only the binaries and the shared libraries they load.

FROM debian:bookworm AS build
# The dependencies first, so that editing sources does not reinstall them.
COPY tools/install_deps.sh /src/tools/install_deps.sh
RUN /src/tools/install_deps.sh && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
# Only the binaries the image ships (the tests and benchmarks are not built).
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target \
      gateway router expert_server attention_server moe-mkmodel moe-cli

FROM debian:bookworm-slim
# The runtime halves of the -dev packages the build links: gRPC 1.51
# (libgrpc++1.51 includes reflection; libgrpc29 brings c-ares, re2, OpenSSL,
# zlib), protobuf 3.21, Abseil 20220623, prometheus-cpp 1.0 (core: the
# registry; pull: the /metrics exposer, with civetweb).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY --from=build \
  /src/build/bin/gateway \
  /src/build/bin/router \
  /src/build/bin/expert_server \
  /src/build/bin/attention_server \
  /src/build/bin/moe-mkmodel \
  /src/build/bin/moe-cli \
  /usr/local/bin/
# Fail the build, not the pod, when a shared library is missing.
RUN ! ldd /usr/local/bin/* | grep 'not found'
USER 65532:65532
# grpc (every server's --listen in deploy/k8s) and metrics (--metrics_port).
EXPOSE 50051 9400
