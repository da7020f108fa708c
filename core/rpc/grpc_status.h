// The one conversion from absl::Status to grpc::Status at the RPC edge.
#ifndef MOE_CORE_RPC_GRPC_STATUS_H_
#define MOE_CORE_RPC_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace moe {

// Same code (the canonical codes coincide) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for clients that surface RPC failures as absl::Status.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace moe

#endif  // MOE_CORE_RPC_GRPC_STATUS_H_
