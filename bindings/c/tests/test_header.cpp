// The header from C++ (extern "C", the enums with their int32_t underlying type): compiled with
// g++ -std=c++17 -Wall -Wextra -Werror and run by ci/c.sh.
#include <cstdio>
#include <cstring>
#include <vector>

#include "lion_optim.h"

static_assert(sizeof(lion_dtype) == 4, "lion_dtype is an int32_t");
static_assert(sizeof(lion_status) == 4, "lion_status is an int32_t");
static_assert(LION_OPTIM_VERSION == ((LION_OPTIM_VERSION_MAJOR << 16) | (LION_OPTIM_VERSION_MINOR << 8) |
                                     LION_OPTIM_VERSION_PATCH),
              "the version number");

int main() {
    int failed = 0;
    lion_hyperparams hp = lion_hyperparams_default();
    hp.lr = 0.25;
    lion_step_options opt = lion_step_options_default();
    opt.rounding = LION_ROUNDING_NEAREST;
    std::vector<float> p(5, 1.0f), m(5, 0.0f);
    const float g[5] = {1.0f, -1.0f, 0.0f, 2.0f, -0.5f};
    lion_status st = lion_step(p.data(), LION_DTYPE_F32, g, LION_DTYPE_F32, m.data(), LION_DTYPE_F32,
                               p.size(), &hp, &opt);
    const float want[5] = {0.75f, 1.25f, 1.0f, 0.75f, 1.25f};
    if (st != LION_STATUS_OK || std::memcmp(p.data(), want, sizeof want) != 0) failed++;
    st = lion_step(p.data(), static_cast<lion_dtype>(12), g, LION_DTYPE_F32, m.data(), LION_DTYPE_F32,
                   p.size(), &hp, &opt);
    if (st != LION_STATUS_INVALID_ENUM) failed++;
    char msg[256];
    lion_last_error(msg, sizeof msg);
    lion_optimizer *o = nullptr;
    if (lion_optimizer_create(&hp, nullptr, &o) != LION_STATUS_OK) failed++;
    lion_optimizer_destroy(o);
    std::printf("test_header (C++): lion_optim %s, last error \"%s\"\n", lion_optim_version_string(), msg);
    std::printf("test_header: %d passed, %d failed\n", 4 - failed, failed);
    return failed != 0;
}
