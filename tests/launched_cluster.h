// A cluster of real processes started by the real launcher:
// `moe-cluster up --topology FILE --model DIR`, with its "NAME: ADDRESS"
// lines parsed once it prints "ready". Stopped with SIGTERM on destruction,
// where the launcher must exit 0.
#ifndef MOE_TESTS_LAUNCHED_CLUSTER_H_
#define MOE_TESTS_LAUNCHED_CLUSTER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moe/v1/attention.grpc.pb.h"
#include "moe/v1/generate.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "tests/process_util.h"

namespace moe::testing {

class LaunchedCluster {
 public:
  // `topology` is a path relative to the source tree (e.g.
  // "deploy/local/four-slices.json") or an absolute path. ADD_FAILUREs and
  // returns nullptr when the cluster does not come up.
  // `extra_args` go to `moe-cluster up` as they are.
  static std::unique_ptr<LaunchedCluster> Start(
      const std::string& topology, const std::string& model_dir,
      const std::vector<std::string>& extra_args = {});
  ~LaunchedCluster();

  // Address of the server named `name` ("gateway", "router",
  // "attention-0", ...); empty if there is none.
  std::string address(const std::string& name) const;
  // The /metrics URL of the server named `name`; empty if there is none.
  std::string metrics_url(const std::string& name) const;
  // The OpenAI API's base URL ("http://127.0.0.1:PORT/v1") of the server
  // named `name` (the gateway); empty when its HTTP API is off.
  std::string openai_url(const std::string& name = "gateway") const;
  // Every server's name, in the launcher's order.
  const std::vector<std::string>& names() const { return names_; }
  // Attention servers: every one, or those of one role ("both", "prefill",
  // "decode").
  std::vector<std::string> attention_names(const std::string& role = "") const;
  // The pid of the server named `name` (a child of the launcher); -1 if not
  // found.
  pid_t pid(const std::string& name) const;

  // What the launcher wrote to stderr so far (unexpected exits, ...).
  std::string launcher_stderr() const { return launcher_->StderrText(); }

  v1::Inference::Stub& gateway() { return *gateway_; }
  v1::RouterService::Stub& router() { return *router_; }
  // One attention server's load (EXPECTs the RPC to succeed).
  v1::AttentionLoad AttentionLoad(const std::string& name);
  // Polls until every attention server has all its KV blocks free and
  // nothing running or waiting; false after 30 s.
  bool WaitForIdleKv();

 private:
  LaunchedCluster() = default;
  std::unique_ptr<ChildProcess> launcher_;
  std::map<std::string, std::string> addresses_;
  std::map<std::string, std::string> roles_;  // attention servers
  std::map<std::string, std::string> metrics_urls_;
  std::map<std::string, std::string> openai_urls_;
  std::vector<std::string> names_;
  std::unique_ptr<v1::Inference::Stub> gateway_;
  std::unique_ptr<v1::RouterService::Stub> router_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_LAUNCHED_CLUSTER_H_
