/* Compiled as C (not run): include/ulysses/c_api.h must stay a C header. */
#include "ulysses/c_api.h"

int ulysses_c_api_header_check(void) {
  ulysses_plan_config config;
  ulysses_forward_args forward = {0};
  ulysses_plan_config_init(&config);
  return config.cp + (int)forward.num_cu_seqlens + ULYSSES_C_API_VERSION;
}
