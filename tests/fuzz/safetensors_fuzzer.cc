// SafetensorsFile::Open on arbitrary file contents (header length, JSON
// header, per-tensor dtype/shape/data_offsets checks), then Get() of every
// tensor with its first and last byte read: every view Open accepts must lie
// inside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// One in-memory file, rewritten for every input.
int MemoryFile() {
  static const int fd = [] {
    const int f = ::memfd_create("moe-fuzz-safetensors", MFD_CLOEXEC);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemoryFile();
  moe::fuzz::Check(::ftruncate(fd, 0) == 0, "ftruncate");
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::pwrite(fd, data + written, size - written, written);
    moe::fuzz::Check(n > 0, "pwrite");
    written += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto file = moe::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  volatile char sink = 0;
  for (const auto& [name, entry] : (*file)->entries()) {
    moe::fuzz::Check(entry.begin <= entry.end &&
                         8 + entry.end <= static_cast<uint64_t>(size),
                     "an accepted entry lies outside the file");
    auto view = (*file)->Get(name);
    if (!view.ok()) continue;  // a dtype the engine does not compute with
    const size_t bytes = entry.end - entry.begin;
    for (int64_t dim : view->shape) {
      moe::fuzz::Check(dim >= 0, "an accepted shape holds a negative dim");
    }
    moe::fuzz::Check(bytes == view->NumBytes(),
                     "view size differs from its data_offsets");
    if (bytes > 0) {
      const char* p = static_cast<const char*>(view->data);
      sink = sink + p[0] + p[bytes - 1];
    }
  }
  return 0;
}
