# The NCCL data plane (core/nccl_data_plane.h) where no GPU is needed: what
# each build and machine answers, the router and expert server refusing
# --data_plane=nccl with the reason, the expert service's checks, the
# router's link protocol and fallback to gRPC bytes (a fake communicator in
# place of NCCL), and the topology fields. The exchanges themselves are in
# tests/gpu/cuda_nccl_test.cc (label gpu).
# It streams RPCs through real servers (tests/CMakeLists.txt: tsan_opaque).
list(APPEND MOE_TSAN_OPAQUE_TESTS data_plane_test)
moe_test(data_plane_test data_plane_test.cc)
target_link_libraries(data_plane_test PRIVATE moe_router_server
  moe_expert_server moe_cluster_topology moe_process_test_util moe_rpc)
add_dependencies(data_plane_test router expert_server)
target_compile_definitions(data_plane_test PRIVATE
  MOE_BIN_DIR="$<TARGET_FILE_DIR:router>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# tests/gpu/cuda_nccl_test.cc (globbed by tests/gpu, CUDA builds only) also
# starts real clusters: it needs the launcher's test helpers and binaries,
# added once every directory has been read.
function(moe_cuda_nccl_test_dependencies)
  if(NOT TARGET cuda_nccl_test)
    return()
  endif()
  target_sources(cuda_nccl_test PRIVATE
    ${CMAKE_SOURCE_DIR}/tests/launched_cluster.cc)
  target_link_libraries(cuda_nccl_test PRIVATE moe_process_test_util
    moe_cluster_checks moe_reliability_test_util moe_rpc absl::strings)
  add_dependencies(cuda_nccl_test moe-cluster expert_server router
    attention_server gateway)
  target_compile_definitions(cuda_nccl_test PRIVATE
    MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
    MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR}
  CALL moe_cuda_nccl_test_dependencies)
