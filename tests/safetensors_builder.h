// Hand-built safetensors byte strings for loader tests: a header JSON that
// the test controls completely (so that it can be made wrong on purpose)
// followed by the data section.
#ifndef MOE_TESTS_SAFETENSORS_BUILDER_H_
#define MOE_TESTS_SAFETENSORS_BUILDER_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "nlohmann/json.hpp"

namespace moe::testing {

// One tensor: its stored dtype string, shape and raw little-endian bytes.
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Raw bytes of `values` stored as `dtype`.
inline std::string EncodeValues(const std::vector<float>& values, DType dtype) {
  std::string out(values.size() * DTypeSize(dtype), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    StoreFromFloat(out.data(), dtype, i, values[i]);
  }
  return out;
}

inline RawTensor MakeTensor(const std::string& name, DType dtype,
                            std::vector<int64_t> shape,
                            const std::vector<float>& values) {
  return {name, std::string(DTypeName(dtype)), std::move(shape),
          EncodeValues(values, dtype)};
}

// The header object for `tensors` laid out back to back in the given order,
// with a "__metadata__" entry; `data` receives the data section.
inline nlohmann::json LayOut(const std::vector<RawTensor>& tensors,
                             std::string* data) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  data->clear();
  for (const RawTensor& t : tensors) {
    const uint64_t begin = data->size();
    data->append(t.bytes);
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {begin, uint64_t{data->size()}}}};
  }
  return header;
}

// 8-byte little-endian header length, the header text, then the data.
inline std::string SafetensorsBytes(const std::string& header_text,
                                    const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header_text;
  out += data;
  return out;
}

// A valid file holding `tensors`.
inline std::string BuildSafetensors(const std::vector<RawTensor>& tensors) {
  std::string data;
  const nlohmann::json header = LayOut(tensors, &data);
  return SafetensorsBytes(header.dump(), data);
}

// The tensors of a safetensors file, raw, in file order (empty when the
// file cannot be read).
inline std::vector<RawTensor> ReadRawTensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  if (bytes.size() < 8) return {};
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len));
  const std::string data = bytes.substr(8 + header_len);
  std::vector<std::pair<uint64_t, RawTensor>> by_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const uint64_t begin = it.value()["data_offsets"][0].get<uint64_t>();
    const uint64_t end = it.value()["data_offsets"][1].get<uint64_t>();
    by_offset.push_back(
        {begin, RawTensor{it.key(), it.value()["dtype"].get<std::string>(),
                          it.value()["shape"].get<std::vector<int64_t>>(),
                          data.substr(begin, end - begin)}});
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<RawTensor> out;
  for (auto& [offset, t] : by_offset) out.push_back(std::move(t));
  return out;
}

}  // namespace moe::testing

#endif  // MOE_TESTS_SAFETENSORS_BUILDER_H_
