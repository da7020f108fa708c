#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using Json = nlohmann::json;

// Headers above this size are rejected as corrupt rather than parsed.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

absl::Status FileError(const std::string& path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
}

absl::Status TensorError(const std::string& path, const std::string& name,
                         absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": tensor \"", name, "\": ", problem));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path,
                                            const std::string& name,
                                            const Json& v, uint64_t data_size) {
  if (!v.is_object()) return TensorError(path, name, "entry is not an object");
  SafetensorsEntry e;
  auto dtype = v.find("dtype");
  if (dtype == v.end() || !dtype->is_string()) {
    return TensorError(path, name, "missing or non-string \"dtype\"");
  }
  e.dtype = dtype->get<std::string>();
  const size_t elem = SafetensorsDTypeSize(e.dtype);
  if (elem == 0) {
    return TensorError(path, name, absl::StrCat("unknown dtype \"", e.dtype, "\""));
  }
  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) {
    return TensorError(path, name, "missing or non-list \"shape\"");
  }
  uint64_t numel = 1;
  for (const Json& d : *shape) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
      return TensorError(path, name, "shape holds a negative or non-integer dim");
    }
    const uint64_t dim = d.get<uint64_t>();
    // Each dim on its own too: after a 0 dim the product stays 0, and a dim
    // above INT64_MAX would become negative in `shape`.
    if (dim > (uint64_t{1} << 62) ||
        (dim != 0 && numel > (uint64_t{1} << 62) / dim)) {
      return TensorError(path, name, "shape is too large");
    }
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  auto offsets = v.find("data_offsets");
  if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return TensorError(path, name,
                       "\"data_offsets\" must be two non-negative integers");
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  if (e.begin > e.end) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                                    "] has begin after end"));
  }
  if (e.end > data_size) {
    return TensorError(
        path, name,
        absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                     "] run past the end of the data (", data_size,
                     " bytes; file truncated?)"));
  }
  if (numel > (uint64_t{1} << 62) / elem) {
    return TensorError(path, name, "shape is too large");
  }
  if (e.end - e.begin != numel * elem) {
    return TensorError(path, name,
                       absl::StrCat("holds ", e.end - e.begin,
                                    " bytes but dtype ", e.dtype, " and shape ",
                                    ShapeString(e.shape), " need ", numel * elem));
  }
  return e;
}

// Faults the whole mapping in (reading the file if it is not cached).
void PopulateMapping(void* map, size_t size) {
#ifdef MADV_POPULATE_READ
  if (::madvise(map, size, MADV_POPULATE_READ) == 0) return;
#endif
  // Older kernels: touch one byte per page.
  volatile const char* p = static_cast<const char*>(map);
  const long page = ::sysconf(_SC_PAGESIZE);
  char sink = 0;
  for (size_t i = 0; i < size; i += page) sink ^= p[i];
  (void)sink;
}

}  // namespace

void PopulateRange(const void* data, size_t bytes, size_t slice_bytes) {
  if (data == nullptr || bytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  const uintptr_t slice = std::max<uintptr_t>(
      page, (static_cast<uintptr_t>(slice_bytes) + page - 1) & ~(page - 1));
  while (begin < end) {
    const uintptr_t stop = std::min(end, begin + slice);
    PopulateMapping(reinterpret_cast<void*>(begin), stop - begin);
    begin = stop;
  }
}

size_t SafetensorsDTypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") {
    return 2;
  }
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" ||
      dtype == "F8_E4M3" || dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path, bool populate) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return FileError(path, "cannot stat");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("file is ", size,
                                        " bytes, too short for a safetensors "
                                        "header (truncated?)"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  // Huge pages where the kernel can back the file with them: streaming
  // weights through 4 KiB pages costs a TLB walk per page and stops the
  // hardware prefetchers at every page boundary. Best effort.
  ::madvise(map, size, MADV_HUGEPAGE);
  if (populate) PopulateMapping(map, size);
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;

  const char* base = static_cast<const char*>(map);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every host we support
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return FileError(path, absl::StrCat("header length ", header_len,
                                        " exceeds the file size ", size,
                                        " (truncated or not safetensors)"));
  }
  Json header = Json::parse(base + 8, base + 8 + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded()) return FileError(path, "header is not valid JSON");
  if (!header.is_object()) return FileError(path, "header is not a JSON object");
  const uint64_t data_size = size - 8 - header_len;
  file->data_ = base + 8 + header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(SafetensorsEntry e,
                     ParseEntry(path, it.key(), it.value(), data_size));
    file->entries_.emplace(it.key(), std::move(e));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": tensor \"", name, "\" is missing"));
  }
  const SafetensorsEntry& e = it->second;
  absl::StatusOr<DType> dtype = ParseDType(e.dtype);
  if (!dtype.ok()) {
    return TensorError(path_, name, dtype.status().message());
  }
  TensorView view;
  view.data = data_ + e.begin;
  view.dtype = *dtype;
  view.shape = e.shape;
  return view;
}

}  // namespace moe
