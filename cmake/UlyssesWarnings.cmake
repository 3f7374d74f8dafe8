# -Wall -Wextra everywhere; -Werror when ULYSSES_WERROR is on (CI).
function(ulysses_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
      -Wno-missing-field-initializers>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${ULYSSES_WERROR}>>:-Werror>)
endfunction()
