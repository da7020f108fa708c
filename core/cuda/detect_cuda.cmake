# Detects CUDA 13 (nvcc, cudart, cuBLAS) and NCCL for the GPU backend.
#
#   MOE_CUDA=AUTO (default)  build the GPU backend when the toolkit is found
#   MOE_CUDA=ON              fail the configure when it is not
#   MOE_CUDA=OFF             CPU only
#
# The toolkit is looked for through CUDACXX / CMAKE_CUDA_COMPILER, then nvcc
# on PATH, then /usr/local/cuda/bin/nvcc. Device code is built for sm_80
# (A100) and sm_90 (H100/H200) unless CMAKE_CUDA_ARCHITECTURES says
# otherwise. Results: MOE_HAVE_CUDA, MOE_HAVE_NCCL (both ON/OFF) and, with
# NCCL, the imported target moe::nccl.
set(MOE_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE MOE_CUDA PROPERTY STRINGS AUTO ON OFF)
set(MOE_HAVE_CUDA OFF)
set(MOE_HAVE_NCCL OFF)

if(NOT MOE_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(MOE_NVCC nvcc PATHS /usr/local/cuda/bin NO_CACHE)
    if(MOE_NVCC)
      set(CMAKE_CUDA_COMPILER ${MOE_NVCC})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    # nvcc drives GCC as its host compiler even in the Clang (ASan) tree:
    # the .cu files are not sanitizer-instrumented, the rest of it is.
    if(NOT CMAKE_CUDA_HOST_COMPILER)
      find_program(MOE_CUDA_HOST_CXX g++ NO_CACHE)
      if(MOE_CUDA_HOST_CXX)
        set(CMAKE_CUDA_HOST_COMPILER ${MOE_CUDA_HOST_CXX})
      endif()
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas)
    if(CUDAToolkit_VERSION VERSION_LESS 12.5)
      message(WARNING "CUDA ${CUDAToolkit_VERSION} is older than 12.5 (no "
        "cublasGemmGroupedBatchedEx); building without the CUDA backend")
    else()
      set(MOE_HAVE_CUDA ON)
    endif()
  endif()
  if(MOE_HAVE_CUDA)
    find_library(MOE_NCCL_LIBRARY nccl
      HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
            /usr/local/cuda/lib /usr/local/cuda/lib64)
    find_path(MOE_NCCL_INCLUDE nccl.h
      HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    if(MOE_NCCL_LIBRARY AND MOE_NCCL_INCLUDE)
      set(MOE_HAVE_NCCL ON)
      add_library(moe::nccl UNKNOWN IMPORTED)
      set_target_properties(moe::nccl PROPERTIES
        IMPORTED_LOCATION ${MOE_NCCL_LIBRARY}
        INTERFACE_INCLUDE_DIRECTORIES ${MOE_NCCL_INCLUDE})
    endif()
  endif()
  if(MOE_CUDA STREQUAL "ON" AND NOT MOE_HAVE_CUDA)
    message(FATAL_ERROR "MOE_CUDA=ON but no CUDA >= 12.5 toolkit with cuBLAS "
      "was found (looked for nvcc on PATH and in /usr/local/cuda/bin)")
  endif()
endif()

if(MOE_HAVE_CUDA)
  message(STATUS "CUDA backend: CUDA ${CUDAToolkit_VERSION}, sm "
    "${CMAKE_CUDA_ARCHITECTURES}, NCCL: ${MOE_HAVE_NCCL}")
else()
  message(STATUS "CUDA backend: not built (MOE_CUDA=${MOE_CUDA})")
endif()
