// Owning CUDA allocations: device memory (DeviceBuffer) and page-locked
// host staging memory (PinnedBuffer), one template with the allocator as a
// policy.
#ifndef MOE_CORE_CUDA_DEVICE_BUFFER_H_
#define MOE_CORE_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"

namespace moe::cuda {

// Memory of the current device.
struct DeviceMemory {
  static constexpr const char* kAllocator = "cudaMalloc";
  static cudaError_t Allocate(void** p, size_t bytes) {
    return cudaMalloc(p, bytes);
  }
  static void Release(void* p) { cudaFree(p); }
};

// Page-locked host memory: copies to and from the device are DMA transfers
// that can overlap host work.
struct PinnedMemory {
  static constexpr const char* kAllocator = "cudaMallocHost";
  static cudaError_t Allocate(void** p, size_t bytes) {
    return cudaMallocHost(p, bytes);
  }
  static void Release(void* p) { cudaFreeHost(p); }
};

// `count` elements of T from `Memory`. Movable; freed on destruction.
// Reserve keeps nothing when it grows (a scratch buffer).
template <typename T, typename Memory>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  ~CudaBuffer() { Free(); }
  CudaBuffer(CudaBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  // Makes room for at least `count` elements (contents not kept when it
  // grows). RESOURCE_EXHAUSTED naming the size when the memory is short.
  absl::Status Reserve(int64_t count) {
    if (count <= count_) return absl::OkStatus();
    Free();
    void* p = nullptr;
    const cudaError_t error = Memory::Allocate(&p, count * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();  // leave no error behind for the next call
      return absl::ResourceExhaustedError(
          absl::StrCat(Memory::kAllocator, " of ", count * sizeof(T),
                       " bytes failed: ", cudaGetErrorString(error)));
    }
    data_ = static_cast<T*>(p);
    count_ = count;
    return absl::OkStatus();
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }
  int64_t bytes() const { return count_ * static_cast<int64_t>(sizeof(T)); }

 private:
  void Free() {
    if (data_ != nullptr) Memory::Release(data_);
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  int64_t count_ = 0;
};

template <typename T>
using DeviceBuffer = CudaBuffer<T, DeviceMemory>;
template <typename T>
using PinnedBuffer = CudaBuffer<T, PinnedMemory>;

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_DEVICE_BUFFER_H_
