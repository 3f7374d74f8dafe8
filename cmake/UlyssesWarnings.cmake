# C++20 (as explicit flags: CMake 3.25 has no CUDA20 dialect for CUDA 13's nvcc), -Wall -Wextra
# everywhere, -Werror when ULYSSES_WERROR is on (CI).
function(ulysses_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
      -Wno-missing-field-initializers>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${ULYSSES_WERROR}>>:-Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${ULYSSES_WERROR}>>:-Werror=all-warnings>)
endfunction()
