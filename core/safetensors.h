// Memory-mapped safetensors files.
//
// Format: 8-byte little-endian header length N, N bytes of JSON mapping tensor
// names to {dtype, shape, data_offsets: [begin, end)} (offsets relative to the
// byte after the header), then the data. Open() validates the whole header
// against the file size so that every later view is in bounds.
#ifndef MOE_CORE_SAFETENSORS_H_
#define MOE_CORE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace moe {

struct SafetensorsEntry {
  std::string dtype;  // as stored, e.g. "BF16", "I64"
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// Faults in the pages of [data, data + bytes) of a read-only mapping, in
// slices of `slice_bytes`, so that each slice holds the process's memory
// map lock only briefly (a whole-file populate holds it while other threads
// that map or unmap memory, e.g. large allocations, wait). Best effort.
void PopulateRange(const void* data, size_t bytes,
                   size_t slice_bytes = size_t{2} << 20);

class SafetensorsFile {
 public:
  // Maps `path` read-only. With `populate`, pages are faulted in up front
  // (weights resident before the first request). Errors name the file and,
  // for per-tensor problems, the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path, bool populate = false);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const {
    return entries_;
  }
  bool Has(const std::string& name) const { return entries_.count(name) > 0; }

  // View of tensor `name`. NOT_FOUND if absent; INVALID_ARGUMENT if its dtype
  // is not one the engine computes with (BF16, F16, F32).
  absl::StatusOr<TensorView> Get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const char* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
};

// Bytes per element of a safetensors dtype string, 0 if unknown.
size_t SafetensorsDTypeSize(const std::string& dtype);

}  // namespace moe

#endif  // MOE_CORE_SAFETENSORS_H_
