#include "core/security/process_security.h"

#include <utility>

#include "absl/synchronization/mutex.h"

namespace moe::security {
namespace {

struct Holder {
  absl::Mutex mu;
  ProcessSecurity security ABSL_GUARDED_BY(mu);
};

Holder& TheHolder() {
  // Never destroyed: channels may be built while the process exits.
  static Holder* const holder = new Holder();
  return *holder;
}

}  // namespace

absl::Status SetProcessSecurity(ProcessSecurity security) {
  if (security.client_certificates == ClientCertificates::kRequired &&
      (!security.tls.has_ca() || !security.tls.has_identity())) {
    return absl::InvalidArgumentError(
        "mutual TLS needs a CA bundle (--tls_ca_file) and this process's "
        "certificate and key (--tls_cert_file, --tls_key_file)");
  }
  Holder& holder = TheHolder();
  absl::MutexLock lock(&holder.mu);
  holder.security = std::move(security);
  return absl::OkStatus();
}

ProcessSecurity GetProcessSecurity() {
  Holder& holder = TheHolder();
  absl::MutexLock lock(&holder.mu);
  return holder.security;
}

std::shared_ptr<grpc::ServerCredentials> ProcessServerCredentials() {
  const ProcessSecurity security = GetProcessSecurity();
  return MakeServerCredentials(security.tls, security.client_certificates);
}

std::shared_ptr<grpc::ChannelCredentials> ProcessChannelCredentials() {
  return MakeChannelCredentials(GetProcessSecurity().tls);
}

}  // namespace moe::security
