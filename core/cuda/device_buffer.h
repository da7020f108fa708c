// Owning device allocations, and page-locked host staging buffers.
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

// `count` elements of T in device memory of the current device. Movable;
// freed on destruction. Resize keeps nothing (a scratch buffer).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Free(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Makes room for at least `count` elements (contents not kept when it
  // grows). RESOURCE_EXHAUSTED naming the size when the device is full.
  absl::Status Reserve(int64_t count) {
    if (count <= count_) return absl::OkStatus();
    Free();
    void* p = nullptr;
    const cudaError_t error = cudaMalloc(&p, count * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state
      return absl::ResourceExhaustedError(absl::StrCat(
          "cudaMalloc of ", count * sizeof(T), " bytes failed: ",
          cudaGetErrorString(error)));
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
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  int64_t count_ = 0;
};

// `count` elements of T in page-locked host memory, so that copies to and
// from the device are true DMA transfers that overlap host work. Same
// contract as DeviceBuffer: movable, grow-only Reserve that keeps nothing.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Free(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  // RESOURCE_EXHAUSTED naming the size when the host cannot pin it.
  absl::Status Reserve(int64_t count) {
    if (count <= count_) return absl::OkStatus();
    Free();
    void* p = nullptr;
    const cudaError_t error = cudaMallocHost(&p, count * sizeof(T));
    if (error != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          "cudaMallocHost of ", count * sizeof(T), " bytes failed: ",
          cudaGetErrorString(error)));
    }
    data_ = static_cast<T*>(p);
    count_ = count;
    return absl::OkStatus();
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }

 private:
  void Free() {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_DEVICE_BUFFER_H_
