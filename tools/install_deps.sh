#!/usr/bin/env bash
# Installs the Debian packages the build needs, and only those missing.
# Usage: tools/install_deps.sh [extra-package ...]
set -euo pipefail

packages=(
  cmake make g++ pkg-config
  libabsl-dev          # Status/StatusOr, flags, strings, synchronization
  nlohmann-json3-dev   # config.json and safetensors header parsing
  libgtest-dev libgmock-dev  # unit and integration tests
  libbenchmark-dev     # micro-benchmarks
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
                       # service RPCs (callback API, health, reflection)
  prometheus-cpp-dev   # /metrics on every server (registry, exposer)
  libpcre2-dev         # tokenizer.json pre-tokenizer regexes (Unicode classes)
  libutf8proc-dev      # NFC/NFKC normalizers of tokenizers
  sentencepiece        # spm_train/spm_encode/spm_decode: the independent
                       # reference of the tokenizer.model reader's tests
  libboost-dev         # Boost.Beast: the gateway's OpenAI-compatible HTTP API
  libssl-dev openssl   # TLS files checked at start-up; test certificates
  prometheus           # the real Prometheus server and promtool, for the
                       # scrape test and the config/rule checks
  curl                 # the scrape test reads /metrics and Prometheus' API
  gnuplot-nox          # moe-loadgen --plot (latency/throughput of a sweep)
  clang libclang-rt-14-dev  # make fuzz: Clang 14 (Debian 12's), libFuzzer
                            # and the sanitizer runtimes
  lld                  # links the ASan + UBSan tree of make test (about
                       # seven times faster than ld.bfd per test binary)
  "$@"
)

# Tools the observability and manifest checks run, wherever they came from
# (this image may carry newer ones than Debian's): installed from Debian
# only when the command is missing.
command -v node > /dev/null || packages+=(nodejs)
command -v npm > /dev/null || packages+=(npm)
command -v kubectl > /dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
