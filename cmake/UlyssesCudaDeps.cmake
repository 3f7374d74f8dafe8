# NCCL and cuDNN (shipped with the CUDA toolkit here) and the header-only cudnn-frontend (from the
# nvidia-cudnn-frontend PyPI wheel, unpacked by scripts/install_deps.sh into .deps/).
find_path(ULYSSES_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
find_library(ULYSSES_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
find_path(ULYSSES_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
find_library(ULYSSES_CUDNN_LIB cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
set(ulysses_fe_default "${PROJECT_SOURCE_DIR}/.deps/cudnn_frontend-1.32.0/include")
if(NOT EXISTS "${ulysses_fe_default}/cudnn_frontend.h" AND SKBUILD)
  # pip install .: the build environment has the nvidia-cudnn-frontend wheel (pyproject.toml), whose
  # headers land in include/ beside its `cudnn` package (found without importing it).
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import importlib.util, os; s = importlib.util.find_spec('cudnn'); print(os.path.dirname(s.submodule_search_locations[0]))"
    OUTPUT_VARIABLE ulysses_fe_root OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(ulysses_fe_default "${ulysses_fe_root}/include")
endif()
set(ULYSSES_CUDNN_FRONTEND_INCLUDE "${ulysses_fe_default}"
    CACHE PATH "cudnn-frontend headers (nvidia-cudnn-frontend 1.32.0)")
if(NOT ULYSSES_NCCL_INCLUDE OR NOT ULYSSES_NCCL_LIB)
  message(FATAL_ERROR "NCCL not found (nccl.h / libnccl); configure with -DULYSSES_CUDA=OFF for a host-only build")
endif()
if(NOT ULYSSES_CUDNN_INCLUDE OR NOT ULYSSES_CUDNN_LIB)
  message(FATAL_ERROR "cuDNN not found (cudnn.h / libcudnn); configure with -DULYSSES_CUDA=OFF for a host-only build")
endif()
if(NOT EXISTS "${ULYSSES_CUDNN_FRONTEND_INCLUDE}/cudnn_frontend.h")
  message(FATAL_ERROR "cudnn-frontend headers not found in ${ULYSSES_CUDNN_FRONTEND_INCLUDE}: run scripts/install_deps.sh")
endif()
message(STATUS "ulysses: NCCL ${ULYSSES_NCCL_LIB}, cuDNN ${ULYSSES_CUDNN_LIB}, cudnn-frontend ${ULYSSES_CUDNN_FRONTEND_INCLUDE}")

add_library(ulysses_nccl INTERFACE)
target_include_directories(ulysses_nccl INTERFACE ${ULYSSES_NCCL_INCLUDE})
target_link_libraries(ulysses_nccl INTERFACE ${ULYSSES_NCCL_LIB})
add_library(ulysses_cudnn INTERFACE)
target_include_directories(ulysses_cudnn INTERFACE ${ULYSSES_CUDNN_INCLUDE})
target_link_libraries(ulysses_cudnn INTERFACE ${ULYSSES_CUDNN_LIB})
add_library(ulysses_cudnn_frontend INTERFACE)
# SYSTEM: third-party headers are not held to this project's warning flags.
target_include_directories(ulysses_cudnn_frontend SYSTEM INTERFACE ${ULYSSES_CUDNN_FRONTEND_INCLUDE})
