#include "core/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

// The data section starts at a multiple of this many bytes from the start of
// the file (the header is padded with spaces). 64 keeps the first tensor
// cache-line aligned in a mapping and satisfies the format's 8-byte rule.
constexpr size_t kDataAlignment = 64;

// Data is handed to write(2) in pieces of this size, with a progress report
// after each, so that progress moves during large tensors.
constexpr size_t kWriteChunkBytes = size_t{8} << 20;

absl::Status IoError(const std::string& path, absl::string_view what,
                     int error_number) {
  return absl::Status(
      absl::ErrnoToStatusCode(error_number),
      absl::StrCat(path, ": ", what, ": ", std::strerror(error_number)));
}

// Owns a file descriptor of a file being written; unless Commit() succeeds,
// the destructor closes and deletes the (partial) file.
// Errors name the final path; the temporary one is an implementation detail.
class OutputFile {
 public:
  OutputFile(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_path_.c_str());
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Writes all `size` bytes, retrying short writes and EINTR.
  absl::Status WriteAll(const char* data, size_t size) {
    while (size > 0) {
      const ssize_t n = ::write(fd_, data, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        return IoError(path_, "write failed", errno);
      }
      if (n == 0) return IoError(path_, "write made no progress", EIO);
      data += n;
      size -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  // Closes the file (reporting deferred write errors) and renames it to its
  // final path.
  absl::Status Commit() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return IoError(path_, "close failed", errno);
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
      return IoError(
          path_, absl::StrCat("cannot rename ", temp_path_, " to it"), errno);
    }
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  std::string path_;
  std::string temp_path_;
  int fd_;
  bool committed_ = false;
};

absl::Status Validate(const std::string& path,
                      const std::vector<TensorToWrite>& tensors) {
  std::set<absl::string_view> names;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": invalid tensor name \"", t.name, "\""));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", t.name, "\" appears twice"));
    }
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor \"", t.name, "\" has a negative dimension in ",
            ShapeString(t.shape)));
      }
    }
    if (!t.fill && t.NumBytes() > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", t.name, "\" has no fill function"));
    }
  }
  return absl::OkStatus();
}

// The JSON header, padded with spaces so that the data section is aligned.
std::string BuildHeader(const std::vector<TensorToWrite>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.NumBytes());
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  const size_t unaligned = (8 + text.size()) % kDataAlignment;
  if (unaligned != 0) text.append(kDataAlignment - unaligned, ' ');
  return text;
}

}  // namespace

int64_t TensorToWrite::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status WriteSafetensors(
    const std::string& path, const std::vector<TensorToWrite>& tensors,
    const std::function<void(int64_t, int64_t)>& progress) {
  RETURN_IF_ERROR(Validate(path, tensors));
  int64_t total = 0;
  int64_t largest = 0;
  for (const TensorToWrite& t : tensors) {
    total += t.NumBytes();
    largest = std::max(largest, t.NumBytes());
  }
  const std::string header = BuildHeader(tensors);

  // Written under a temporary name and renamed at the end, so a reader never
  // sees a partial file under `path`.
  const std::string temp_path = absl::StrCat(path, ".partial");
  const int fd =
      ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return IoError(path, absl::StrCat("cannot create ", temp_path), errno);
  }
  OutputFile out(path, temp_path, fd);

  char length[8];
  uint64_t header_len = header.size();
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<char>(header_len >> (8 * i));
  RETURN_IF_ERROR(out.WriteAll(length, sizeof(length)));
  RETURN_IF_ERROR(out.WriteAll(header.data(), header.size()));

  // One buffer, sized for the largest tensor, reused for every tensor.
  std::unique_ptr<char[]> buffer(new char[std::max<int64_t>(largest, 1)]);
  int64_t done = 0;
  if (progress) progress(0, total);
  for (const TensorToWrite& t : tensors) {
    const size_t bytes = static_cast<size_t>(t.NumBytes());
    if (bytes == 0) continue;
    t.fill(buffer.get());
    for (size_t pos = 0; pos < bytes; pos += kWriteChunkBytes) {
      const size_t n = std::min(kWriteChunkBytes, bytes - pos);
      RETURN_IF_ERROR(out.WriteAll(buffer.get() + pos, n));
      done += static_cast<int64_t>(n);
      if (progress) progress(done, total);
    }
  }
  return out.Commit();
}

}  // namespace moe
