#include "core/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

absl::StatusOr<std::map<std::string, std::string>> ReadIndex(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field \"weight_map\" is missing or not an object"));
  }
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": weight_map entry for tensor \"", it.key(),
          "\" is not a file name"));
    }
    const std::string file = it.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos ||
        file.find("..") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": weight_map entry for tensor \"", it.key(),
          "\" names shard \"", file,
          "\", which is not a plain file name in the checkpoint directory"));
    }
    out.emplace(it.key(), file);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::string& dir, CheckpointOptions options) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  ckpt->options_ = options;
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint directory ", dir, " does not exist"));
  }
  ASSIGN_OR_RETURN(ckpt->config_, LoadModelConfig(dir));

  const std::string index = dir + "/" + kIndexFile;
  if (std::filesystem::exists(index)) {
    ASSIGN_OR_RETURN(ckpt->weight_map_, ReadIndex(index));
  } else if (std::filesystem::exists(dir + "/" + kSingleFile)) {
    // The single file's header lists the tensors; it must be mapped anyway.
    absl::StatusOr<const SafetensorsFile*> shard = ckpt->Shard(kSingleFile);
    if (!shard.ok()) return shard.status();
    for (const auto& [name, entry] : (*shard)->entries()) {
      ckpt->weight_map_.emplace(name, kSingleFile);
    }
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither ", kSingleFile,
                                            " nor ", kIndexFile, " found"));
  }
  return ckpt;
}

bool Checkpoint::Has(const std::string& name) const {
  return weight_map_.count(name) > 0;
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::Shard(
    const std::string& file) {
  absl::MutexLock lock(&mu_);
  auto it = shards_.find(file);
  if (it != shards_.end()) return it->second.get();
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard,
                   SafetensorsFile::Open(dir_ + "/" + file, options_.populate));
  const SafetensorsFile* ptr = shard.get();
  shards_.emplace(file, std::move(shard));
  return ptr;
}

absl::StatusOr<TensorView> Checkpoint::Get(const std::string& name,
                                           const std::vector<int64_t>& shape) {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(absl::StrCat(
        dir_, ": tensor \"", name, "\" is missing from the checkpoint"));
  }
  absl::StatusOr<const SafetensorsFile*> shard = Shard(it->second);
  if (!shard.ok()) {
    return absl::Status(shard.status().code(),
                        absl::StrCat("shard \"", it->second, "\" (holding \"",
                                     name, "\"): ", shard.status().message()));
  }
  if (!(*shard)->Has(name)) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": tensor \"", name, "\" is listed in ", kIndexFile,
                     " under shard \"", it->second,
                     "\" but that shard does not contain it"));
  }
  ASSIGN_OR_RETURN(TensorView view, (*shard)->Get(name));
  if (view.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir_, ": tensor \"", name, "\" has shape ", ShapeString(view.shape),
        ", expected ", ShapeString(shape)));
  }
  return view;
}

std::vector<std::string> Checkpoint::OpenedShards() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [file, shard] : shards_) out.push_back(file);
  return out;
}

}  // namespace moe
