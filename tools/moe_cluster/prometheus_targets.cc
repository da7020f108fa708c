#include "tools/moe_cluster/prometheus_targets.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe::cluster {

std::string TargetFileStem(const std::string& binary) {
  if (binary == "attention_server") return "attention";
  if (binary == "expert_server") return "expert";
  return binary;  // gateway, router
}

absl::Status WritePrometheusTargets(const std::string& dir,
                                    const std::vector<MetricsTarget>& targets) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("--prometheus_targets_dir: cannot create ", dir));
  }
  std::map<std::string, nlohmann::json> files;
  for (const char* stem : {"gateway", "attention", "router", "expert"}) {
    files[stem] = nlohmann::json::array();
  }
  for (const MetricsTarget& target : targets) {
    nlohmann::json labels = {{"server", target.name}};
    if (!target.role.empty()) labels["role"] = target.role;
    files[TargetFileStem(target.binary)].push_back(
        {{"targets", {target.address}}, {"labels", labels}});
  }
  for (const auto& [stem, groups] : files) {
    const std::string path = absl::StrCat(dir, "/", stem, ".json");
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << groups.dump(2) << "\n";
      out.close();
      if (!out) {
        return absl::PermissionDeniedError(
            absl::StrCat("--prometheus_targets_dir: cannot write ", tmp));
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "--prometheus_targets_dir: cannot rename ", tmp, " to ", path));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::cluster
