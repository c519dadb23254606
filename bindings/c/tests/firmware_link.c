/* A bare-metal program (thumbv7em-none-eabihf, newlib's nosys stubs) that calls every stateless
 * entry point of the library built without std: ci/c.sh links it with --gc-sections and checks
 * that the Rust panic handler (rust_begin_unwind) is not in the result, i.e. that no panic is
 * reachable from these entry points whatever their arguments. With -DLION_FIRMWARE_HANDLE (and
 * the library built with `alloc`) it also uses an optimizer handle: malloc/free from newlib.
 * (Linked only; issue 24 runs a firmware with the library on an emulated Cortex-M4F.)
 */
#include <stddef.h>
#include <stdint.h>

#include "lion_optim.h"

static float p[64], g[64], m[64], absmax[1];
static uint8_t codes[64];
static char message[128];

/* volatile: the compiler cannot know the arguments, so every path stays. */
volatile int32_t dtype_p, dtype_g, dtype_m;
volatile size_t len = 64;
volatile int32_t status;

int main(void) {
    lion_hyperparams hp = lion_hyperparams_default();
    lion_step_options o = lion_step_options_default();
    uint64_t count = 0;
    int32_t finite = 0;
    int32_t s = 0;
    s |= lion_step(p, dtype_p, g, dtype_g, m, dtype_m, len, &hp, &o);
    s |= lion_step_q8(p, dtype_p, g, dtype_g, codes, absmax, len, &hp, &o);
    s |= lion_cautious_count(g, dtype_g, m, dtype_m, len, &hp, &o, &count);
    s |= lion_cautious_count_q8(g, dtype_g, codes, absmax, len, &hp, &o, &count);
    s |= lion_all_finite(g, dtype_g, len, &o, &finite);
#ifdef LION_FIRMWARE_HANDLE
    {
        lion_optimizer *opt = NULL;
        lion_tensor_spec spec = lion_tensor_spec_default();
        lion_tensor_update u = {0, 64, p, g, LION_DTYPE_F32, LION_DTYPE_F32};
        static uint8_t state[1024];
        size_t size = 0, id = 0;
        spec.len = 64;
        spec.name = "w";
        s |= lion_optimizer_create(&hp, &o, &opt);
        s |= lion_optimizer_add_tensor(opt, &spec, &id);
        s |= lion_optimizer_step(opt, &u, 1);
        s |= lion_optimizer_save_state(opt, state, sizeof state, &size);
        s |= lion_optimizer_load_state(opt, state, size);
        lion_optimizer_destroy(opt);
    }
#endif
    lion_last_error(message, sizeof message);
    status = s + (int32_t)lion_optim_version() + lion_status_name(s)[0] + lion_backend_name()[0] +
             lion_optim_version_string()[0] + (int32_t)count + finite;
    return 0;
}
