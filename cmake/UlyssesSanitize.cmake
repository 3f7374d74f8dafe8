# ULYSSES_SANITIZE (e.g. "address,undefined" or "thread"): every host C++ file of the library, the C
# API, the tests and the benchmark is compiled and linked with -fsanitize=<list>; undefined behaviour
# stops the test that hit it. CUDA device code is left alone (scripts/sanitize.sh builds without the
# CUDA parts). ULYSSES_SANITIZE_PRELOAD names AddressSanitizer's runtime, which a Python interpreter
# (not built with it) must preload to load libulysses_c.so. ThreadSanitizer's cannot be preloaded
# into one (the interpreter crashes at start), so under it the Python tests are not registered.
set(ULYSSES_SANITIZE_PRELOAD "")
if(ULYSSES_SANITIZE)
  if(NOT ULYSSES_SANITIZE MATCHES "^[a-z,]+$")
    message(FATAL_ERROR "ULYSSES_SANITIZE='${ULYSSES_SANITIZE}': expected a comma-separated list of "
                        "sanitizer names, e.g. address,undefined or thread")
  endif()
  message(STATUS "ulysses: host code built with -fsanitize=${ULYSSES_SANITIZE}")
  foreach(flag -fsanitize=${ULYSSES_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${flag}>)
  endforeach()
  add_link_options(-fsanitize=${ULYSSES_SANITIZE})
  if(",${ULYSSES_SANITIZE}," MATCHES ",address,")
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libasan.so
                    OUTPUT_VARIABLE ULYSSES_SANITIZE_PRELOAD OUTPUT_STRIP_TRAILING_WHITESPACE)
  endif()
endif()
