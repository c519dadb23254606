/* Every bad input gets its status code, a message naming what is wrong, and writes nothing:
 * NULL and misaligned pointers, out-of-range enum values and flags, uninitialized structs,
 * lengths the address space cannot hold or that disagree with a tensor's, overlapping buffers,
 * invalid hyperparameters and options, bad checkpoints (both formats), too-small buffers,
 * unknown tensors and groups, duplicate tensors and names, dtype mismatches; the last-error
 * buffer's truncation.
 */
#include <math.h>

#include "check.h"

enum { N = 64 };

/* Buffers of one stateless call, and copies to check that nothing was written. */
typedef struct {
    float p[N], g[N], m[N];
    float p0[N], g0[N], m0[N];
} bufs;

static void bufs_init(bufs *b) {
    for (int i = 0; i < N; i++) {
        b->p[i] = 1.0f + (float)i / 64;
        b->g[i] = (i % 3 == 0) ? -0.5f : 0.25f;
        b->m[i] = (float)(i % 5) / 10 - 0.2f;
    }
    memcpy(b->p0, b->p, sizeof b->p);
    memcpy(b->g0, b->g, sizeof b->g);
    memcpy(b->m0, b->m, sizeof b->m);
}

static int bufs_unchanged(const bufs *b) {
    return memcmp(b->p, b->p0, sizeof b->p) == 0 && memcmp(b->g, b->g0, sizeof b->g) == 0 &&
           memcmp(b->m, b->m0, sizeof b->m) == 0;
}

/* A stateless step that must fail with `want` and write nothing. */
#define STEP_FAILS(b, want, p, pd, g, gd, m, md, len, hp, o)                         \
    do {                                                                            \
        CHECK_STATUS(lion_step(p, pd, g, gd, m, md, len, hp, o), want);             \
        CHECK_MSG(bufs_unchanged(b), "a failed lion_step wrote to its buffers");    \
    } while (0)

static void test_stateless_errors(void) {
    bufs B, *b = &B;
    bufs_init(b);
    lion_hyperparams hp = lion_hyperparams_default();
    lion_step_options o = lion_step_options_default();
    const int32_t F32 = LION_DTYPE_F32, F16 = LION_DTYPE_F16, BF16 = LION_DTYPE_BF16;

    /* NULL buffers with a length; NULL is fine for an empty call. */
    STEP_FAILS(b, LION_STATUS_NULL_POINTER, NULL, F32, b->g, F32, b->m, F32, N, &hp, &o);
    CHECK_ERROR_HAS("lion_step: params is NULL");
    STEP_FAILS(b, LION_STATUS_NULL_POINTER, b->p, F32, NULL, F32, b->m, F32, N, &hp, &o);
    CHECK_ERROR_HAS("grads is NULL");
    STEP_FAILS(b, LION_STATUS_NULL_POINTER, b->p, F32, b->g, F32, NULL, F32, N, &hp, &o);
    CHECK_ERROR_HAS("momentum is NULL");
    CHECK_STATUS(lion_step(NULL, F32, NULL, BF16, NULL, F16, 0, &hp, &o), LION_STATUS_OK);
    /* NULL hyperparameters and options: the defaults. */
    CHECK_STATUS(lion_step(NULL, F32, NULL, F32, NULL, F32, 0, NULL, NULL), LION_STATUS_OK);

    /* Misaligned for the dtype (a float at an odd address; f16 at an odd address). */
    uint8_t *raw = (uint8_t *)b->p;
    STEP_FAILS(b, LION_STATUS_MISALIGNED, raw + 1, F32, b->g, F32, b->m, F32, 4, &hp, &o);
    CHECK_ERROR_HAS("not aligned");
    STEP_FAILS(b, LION_STATUS_MISALIGNED, raw + 2, F32, b->g, F32, b->m, F32, 4, &hp, &o);
    STEP_FAILS(b, LION_STATUS_MISALIGNED, b->p, F32, (uint8_t *)b->g + 1, F16, b->m, F32, 4, &hp, &o);
    STEP_FAILS(b, LION_STATUS_MISALIGNED, b->p, F32, b->g, F32, (uint8_t *)b->m + 3, BF16, 4, &hp, &o);
    /* 2-byte alignment is enough for f16 and bf16. */
    CHECK_STATUS(lion_step(NULL, F32, NULL, F32, NULL, F32, 0, &hp, &o), LION_STATUS_OK);
    {
        uint16_t p16[8] = {0}, g16[8] = {0}, m16[8] = {0};
        CHECK_STATUS(lion_step(p16 + 1, BF16, g16 + 1, F16, m16 + 1, BF16, 7, &hp, &o),
                     LION_STATUS_OK);
    }

    /* Enum values out of range: dtypes, rounding, cautious; Q8 and ANY where not allowed. */
    int32_t bad_dtypes[] = {-2, 4, 7, 1000, INT32_MIN, INT32_MAX, LION_DTYPE_ANY, LION_DTYPE_Q8};
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof *bad_dtypes; i++) {
        int32_t d = bad_dtypes[i];
        STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, d, b->g, F32, b->m, F32, N, &hp, &o);
        CHECK_ERROR_HAS("p_dtype");
        STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, d, b->m, F32, N, &hp, &o);
        CHECK_ERROR_HAS("g_dtype");
        if (d != LION_DTYPE_Q8) {
            STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, F32, b->m, d, N, &hp, &o);
            CHECK_ERROR_HAS("m_dtype");
        }
    }
    STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, F32, b->m, LION_DTYPE_Q8, N, &hp, &o);
    CHECK_ERROR_HAS("lion_step_q8");
    {
        lion_step_options bad = o;
        bad.rounding = (lion_rounding)2;
        STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, F32, b->m, F32, N, &hp, &bad);
        CHECK_ERROR_HAS("rounding");
        bad = o;
        bad.cautious = (lion_cautious)-1;
        STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, F32, b->m, F32, N, &hp, &bad);
        CHECK_ERROR_HAS("cautious");
        bad = o;
        bad.maximize = 2;
        STEP_FAILS(b, LION_STATUS_INVALID_ARGUMENT, b->p, F32, b->g, F32, b->m, F32, N, &hp, &bad);
        CHECK_ERROR_HAS("maximize");
        bad = o;
        bad.skip_non_finite = -1;
        STEP_FAILS(b, LION_STATUS_INVALID_ARGUMENT, b->p, F32, b->g, F32, b->m, F32, N, &hp, &bad);
    }

    /* Structs that were not initialized with their _default(). */
    {
        lion_hyperparams zero_hp;
        lion_step_options zero_o;
        memset(&zero_hp, 0, sizeof zero_hp);
        memset(&zero_o, 0, sizeof zero_o);
        STEP_FAILS(b, LION_STATUS_INVALID_ARGUMENT, b->p, F32, b->g, F32, b->m, F32, N, &zero_hp, &o);
        CHECK_ERROR_HAS("lion_hyperparams_default()");
        STEP_FAILS(b, LION_STATUS_INVALID_ARGUMENT, b->p, F32, b->g, F32, b->m, F32, N, &hp, &zero_o);
        CHECK_ERROR_HAS("lion_step_options_default()");
        lion_hyperparams older = hp;
        older.struct_size = sizeof older - 8;
        STEP_FAILS(b, LION_STATUS_INVALID_ARGUMENT, b->p, F32, b->g, F32, b->m, F32, N, &older, &o);
        /* A misaligned struct. */
        union {
            lion_hyperparams h;
            uint8_t bytes[sizeof(lion_hyperparams) + 8];
        } space;
        memcpy(space.bytes + 4, &hp, sizeof hp);
        STEP_FAILS(b, LION_STATUS_MISALIGNED, b->p, F32, b->g, F32, b->m, F32, N,
                   (const lion_hyperparams *)(const void *)(space.bytes + 4), &o);
    }

    /* A length the address space cannot hold (the pointers are never dereferenced). */
    STEP_FAILS(b, LION_STATUS_LENGTH_MISMATCH, b->p, F32, b->g, F32, b->m, F32, SIZE_MAX / 2,
               &hp, &o);
    CHECK_ERROR_HAS("address space");

    /* Overlapping buffers: params as grads, params inside momentum, grads as momentum. */
    STEP_FAILS(b, LION_STATUS_OVERLAP, b->p, F32, b->p, F32, b->m, F32, N, &hp, &o);
    CHECK_ERROR_HAS("params and grads overlap");
    STEP_FAILS(b, LION_STATUS_OVERLAP, b->p, F32, b->g, F32, b->p + 8, F32, 16, &hp, &o);
    STEP_FAILS(b, LION_STATUS_OVERLAP, b->p, F32, b->g, F32, b->g, F32, N, &hp, &o);
    STEP_FAILS(b, LION_STATUS_OVERLAP, b->p, F32, b->g, F32, b->p, F32, N, &hp, &o);
    /* Adjacent buffers are fine. */
    {
        float all[3 * 8] = {0};
        CHECK_STATUS(lion_step(all, F32, all + 8, F32, all + 16, F32, 8, &hp, &o), LION_STATUS_OK);
    }

    /* Invalid hyperparameters and options. */
    struct {
        double lr, beta1, beta2, wd, unscale, max_lr;
        const char *name;
    } bad_hp[] = {
        {-1e-3, 0.9, 0.99, 0, 0, 0, "lr"},         {NAN, 0.9, 0.99, 0, 0, 0, "lr"},
        {1e39, 0.9, 0.99, 0, 0, 0, "lr"},          {1e-3, 1.0, 0.99, 0, 0, 0, "beta1"},
        {1e-3, -0.1, 0.99, 0, 0, 0, "beta1"},      {1e-3, 0.9, 1.0, 0, 0, 0, "beta2"},
        {1e-3, 0.9, 0.99, -1, 0, 0, "weight_decay"}, {0.5, 0.9, 0.99, 3, 0, 0, "weight_decay"},
        {1e-3, 0.9, 0.99, 0, -2, 0, "grad_unscale"}, {1e-3, 0.9, 0.99, 0, 1e300, 0, "grad_unscale"},
        {1e-3, 0.9, 0.99, 0.1, 0, -1, "max_lr"},
    };
    for (size_t i = 0; i < sizeof bad_hp / sizeof *bad_hp; i++) {
        lion_hyperparams h = hp;
        lion_step_options oo = o;
        h.lr = bad_hp[i].lr;
        h.beta1 = bad_hp[i].beta1;
        h.beta2 = bad_hp[i].beta2;
        h.weight_decay = bad_hp[i].wd;
        oo.grad_unscale = bad_hp[i].unscale;
        oo.max_lr = bad_hp[i].max_lr;
        STEP_FAILS(b, LION_STATUS_INVALID_HYPERPARAMETER, b->p, F32, b->g, F32, b->m, F32, N, &h, &oo);
        CHECK_ERROR_HAS(bad_hp[i].name);
    }
    {
        lion_step_options oo = o;
        oo.offset = UINT64_MAX; /* offset + len overflows */
        STEP_FAILS(b, LION_STATUS_INVALID_HYPERPARAMETER, b->p, F32, b->g, F32, b->m, F32, N, &hp, &oo);
        CHECK_ERROR_HAS("offset");
        oo = o;
        oo.cautious = LION_CAUTIOUS_SHARD;
        oo.cautious_agreeing = 10;
        oo.cautious_numel = 5;
        STEP_FAILS(b, LION_STATUS_INVALID_HYPERPARAMETER, b->p, F32, b->g, F32, b->m, F32, N, &hp, &oo);
        oo.cautious_agreeing = 1;
        oo.cautious_numel = N - 1; /* smaller than the shard */
        STEP_FAILS(b, LION_STATUS_INVALID_HYPERPARAMETER, b->p, F32, b->g, F32, b->m, F32, N, &hp, &oo);
    }

    /* Skipping a non-finite step: a success status, nothing written. */
    {
        lion_step_options oo = o;
        oo.skip_non_finite = 1;
        b->g[5] = INFINITY;
        memcpy(b->g0, b->g, sizeof b->g);
        CHECK_STATUS(lion_step(b->p, F32, b->g, F32, b->m, F32, N, &hp, &oo),
                     LION_STATUS_SKIPPED_NON_FINITE);
        CHECK(bufs_unchanged(b));
        int32_t finite = 7;
        CHECK_STATUS(lion_all_finite(b->g, F32, N, &oo, &finite), LION_STATUS_OK);
        CHECK(finite == 0);
        bufs_init(b);
    }

    /* The count and the finiteness check: their own arguments. */
    uint64_t count = 12345;
    CHECK_STATUS(lion_cautious_count(b->g, F32, b->m, F32, N, &hp, &o, NULL), LION_STATUS_NULL_POINTER);
    {
        union {
            uint64_t u[2];
            uint8_t bytes[16];
        } out;
        out.u[0] = out.u[1] = 0;
        CHECK_STATUS(lion_cautious_count(b->g, F32, b->m, F32, N, &hp, &o,
                                         (uint64_t *)(void *)(out.bytes + 4)),
                     LION_STATUS_MISALIGNED);
        CHECK(out.u[0] == 0 && out.u[1] == 0);
    }
    CHECK_STATUS(lion_cautious_count(NULL, F32, b->m, F32, N, &hp, &o, &count), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_cautious_count(b->g, 9, b->m, F32, N, &hp, &o, &count), LION_STATUS_INVALID_ENUM);
    CHECK_STATUS(lion_cautious_count(b->g, F32, b->m, LION_DTYPE_Q8, N, &hp, &o, &count),
                 LION_STATUS_INVALID_ENUM);
    {
        lion_hyperparams h = hp;
        h.beta1 = 2;
        CHECK_STATUS(lion_cautious_count(b->g, F32, b->m, F32, N, &h, &o, &count),
                     LION_STATUS_INVALID_HYPERPARAMETER);
    }
    CHECK(count == 12345);
    /* Grads and momentum may share memory: both are only read. */
    CHECK_STATUS(lion_cautious_count(b->g, F32, b->g, F32, N, &hp, &o, &count), LION_STATUS_OK);
    int32_t finite = 7;
    CHECK_STATUS(lion_all_finite(b->g, F32, N, &o, NULL), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_all_finite(NULL, F32, N, &o, &finite), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_all_finite(b->g, LION_DTYPE_ANY, N, &o, &finite), LION_STATUS_INVALID_ENUM);
    {
        lion_step_options oo = o;
        oo.grad_unscale = -1;
        CHECK_STATUS(lion_all_finite(b->g, F32, N, &oo, &finite), LION_STATUS_INVALID_HYPERPARAMETER);
    }
    CHECK(finite == 7);
    CHECK_STATUS(lion_all_finite(NULL, F32, 0, NULL, &finite), LION_STATUS_OK);
    CHECK(finite == 1);

    /* 8-bit momentum: its two buffers checked like the others, nothing written on an error. */
    {
        uint8_t codes[N], codes0[N];
        float absmax[2] = {0.5f, 0.25f}, absmax0[2];
        for (int i = 0; i < N; i++) codes[i] = (uint8_t)(i * 37);
        memcpy(codes0, codes, sizeof codes);
        memcpy(absmax0, absmax, sizeof absmax);
#define Q8_UNCHANGED()                                                                     \
    CHECK_MSG(bufs_unchanged(b) && memcmp(codes, codes0, sizeof codes) == 0 &&             \
                  memcmp(absmax, absmax0, sizeof absmax) == 0,                             \
              "a failed lion_step_q8 wrote to its buffers")
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, NULL, N, &hp, &o),
                     LION_STATUS_NULL_POINTER);
        CHECK_ERROR_HAS("lion_step_q8: absmax is NULL");
        Q8_UNCHANGED();
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, NULL, absmax, N, &hp, &o),
                     LION_STATUS_NULL_POINTER);
        CHECK_ERROR_HAS("codes is NULL");
        Q8_UNCHANGED();
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, (float *)(void *)((uint8_t *)absmax + 1),
                                  N, &hp, &o),
                     LION_STATUS_MISALIGNED);
        CHECK_ERROR_HAS("absmax");
        Q8_UNCHANGED();
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hp, &o), LION_STATUS_OK);
        memcpy(codes, codes0, sizeof codes);
        memcpy(absmax, absmax0, sizeof absmax);
        memcpy(b->p, b->p0, sizeof b->p);
        /* Blocks are aligned to the tensor: an offset inside a block is refused. */
        lion_step_options oq = o;
        oq.offset = 100;
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hp, &oq),
                     LION_STATUS_INVALID_HYPERPARAMETER);
        CHECK_ERROR_HAS("offset");
        CHECK_ERROR_HAS("256");
        Q8_UNCHANGED();
        CHECK_STATUS(lion_cautious_count_q8(b->g, F32, codes, absmax, N, &hp, &oq, &count),
                     LION_STATUS_INVALID_HYPERPARAMETER);
        CHECK_ERROR_HAS("offset");
        oq.offset = 512;
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hp, &oq), LION_STATUS_OK);
        memcpy(codes, codes0, sizeof codes);
        memcpy(absmax, absmax0, sizeof absmax);
        memcpy(b->p, b->p0, sizeof b->p);
        /* Overlaps: codes in params, absmax in codes, absmax in grads, codes in grads. */
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, (uint8_t *)b->p + 8, absmax, N, &hp, &o),
                     LION_STATUS_OVERLAP);
        CHECK_ERROR_HAS("params and codes overlap");
        Q8_UNCHANGED();
        {
            float area[4] = {0, 0, 0, 0};
            CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, (uint8_t *)area, area + 1, 8, &hp, &o),
                         LION_STATUS_OVERLAP);
            CHECK_ERROR_HAS("codes and absmax overlap");
            CHECK(area[0] == 0 && area[1] == 0);
            Q8_UNCHANGED();
        }
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, b->g + 3, N, &hp, &o),
                     LION_STATUS_OVERLAP);
        CHECK_ERROR_HAS("absmax");
        Q8_UNCHANGED();
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, (uint8_t *)b->g, absmax, N, &hp, &o),
                     LION_STATUS_OVERLAP);
        CHECK_ERROR_HAS("grads and codes overlap");
        Q8_UNCHANGED();
        /* Dtypes: Q8 is not a parameter or gradient type; 8-bit momentum is not lion_step's. */
        CHECK_STATUS(lion_step_q8(b->p, LION_DTYPE_Q8, b->g, F32, codes, absmax, N, &hp, &o),
                     LION_STATUS_INVALID_ENUM);
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, 9, codes, absmax, N, &hp, &o),
                     LION_STATUS_INVALID_ENUM);
        STEP_FAILS(b, LION_STATUS_INVALID_ENUM, b->p, F32, b->g, F32, codes, LION_DTYPE_Q8, N, &hp, &o);
        CHECK_ERROR_HAS("use lion_step_q8");
        Q8_UNCHANGED();
        /* Invalid hyperparameters and options, uninitialized structs. */
        lion_hyperparams hq = hp;
        hq.beta1 = 1.5;
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hq, &o),
                     LION_STATUS_INVALID_HYPERPARAMETER);
        CHECK_ERROR_HAS("beta1");
        Q8_UNCHANGED();
        oq = o;
        oq.struct_size = 0;
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hp, &oq),
                     LION_STATUS_INVALID_ARGUMENT);
        Q8_UNCHANGED();
        /* The count: NULL buffers and output, misaligned absmax; nothing written. */
        count = 5;
        CHECK_STATUS(lion_cautious_count_q8(b->g, F32, codes, NULL, N, &hp, &o, &count),
                     LION_STATUS_NULL_POINTER);
        CHECK_ERROR_HAS("absmax is NULL");
        CHECK_STATUS(lion_cautious_count_q8(b->g, F32, codes, (const float *)(const void *)((uint8_t *)absmax + 2),
                                            N, &hp, &o, &count),
                     LION_STATUS_MISALIGNED);
        CHECK_STATUS(lion_cautious_count_q8(b->g, F32, codes, absmax, N, &hp, &o, NULL),
                     LION_STATUS_NULL_POINTER);
        CHECK(count == 5);
        /* Empty calls take NULL; a block boundary split needs nothing else. */
        CHECK_STATUS(lion_step_q8(NULL, F32, NULL, BF16, NULL, NULL, 0, NULL, NULL), LION_STATUS_OK);
        CHECK_STATUS(lion_cautious_count_q8(NULL, F16, NULL, NULL, 0, NULL, NULL, &count),
                     LION_STATUS_OK);
        CHECK(count == 0);
        Q8_UNCHANGED();
        /* A valid call writes (the vectors of test_stateless check what). */
        CHECK_STATUS(lion_step_q8(b->p, F32, b->g, F32, codes, absmax, N, &hp, &o), LION_STATUS_OK);
        CHECK(memcmp(b->p, b->p0, sizeof b->p) != 0 && absmax[1] == absmax0[1]);
        memcpy(b->p, b->p0, sizeof b->p);
#undef Q8_UNCHANGED
    }
    CHECK(bufs_unchanged(b));
}

static void test_last_error(void) {
    float p[4] = {0};
    CHECK_STATUS(lion_step(p, 42, p, LION_DTYPE_F32, p, LION_DTYPE_F32, 4, NULL, NULL),
                 LION_STATUS_INVALID_ENUM);
    size_t n = lion_last_error(NULL, 0);
    CHECK(n > 20);
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(lion_last_error(small, sizeof small) == n);
    CHECK(small[7] == 0 && strlen(small) == 7 && memcmp(small, "lion_st", 7) == 0);
    char one[1] = {'x'};
    CHECK(lion_last_error(one, 1) == n && one[0] == 0);
    CHECK(strcmp(lion_status_name(LION_STATUS_OVERLAP), "LION_STATUS_OVERLAP") == 0);
    CHECK(strcmp(lion_status_name(12345), "(not a lion_status)") == 0);
    /* A success leaves the last error as it was. */
    CHECK_STATUS(lion_step(NULL, 0, NULL, 0, NULL, 0, 0, NULL, NULL), LION_STATUS_OK);
    CHECK(lion_last_error(NULL, 0) == n);
}

/* A handle with two tensors, "w" (f32, 8) and "b" (bf16 parameters only, 4). */
static lion_optimizer *two_tensors(void) {
    lion_optimizer *opt = NULL;
    lion_hyperparams hp = lion_hyperparams_default();
    hp.lr = 0.01;
    CHECK_STATUS(lion_optimizer_create(&hp, NULL, &opt), LION_STATUS_OK);
    lion_tensor_spec s = lion_tensor_spec_default();
    size_t id;
    s.len = 8;
    s.name = "w";
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_OK);
    s.len = 4;
    s.name = "b";
    s.params_dtype = LION_DTYPE_BF16;
    s.momentum_dtype = LION_DTYPE_BF16;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_OK);
    return opt;
}

static uint8_t *state_of(lion_optimizer *opt, size_t *n) {
    CHECK_STATUS(lion_optimizer_state_size(opt, n), LION_STATUS_OK);
    uint8_t *buf = (uint8_t *)malloc(*n);
    size_t w;
    CHECK_STATUS(lion_optimizer_save_state(opt, buf, *n, &w), LION_STATUS_OK);
    return buf;
}

static void test_handle_errors(void) {
    lion_optimizer *opt = NULL, *sentinel = (lion_optimizer *)(uintptr_t)0x1000;
    lion_hyperparams hp = lion_hyperparams_default();
    lion_step_options o = lion_step_options_default();
    size_t id = 777;

    /* Creation. */
    CHECK_STATUS(lion_optimizer_create(NULL, NULL, NULL), LION_STATUS_NULL_POINTER);
    hp.lr = -1;
    opt = sentinel;
    CHECK_STATUS(lion_optimizer_create(&hp, NULL, &opt), LION_STATUS_INVALID_HYPERPARAMETER);
    CHECK(opt == sentinel);
    hp = lion_hyperparams_default();
    o.step = 3; /* a group's options leave step, offset, stream to the optimizer */
    CHECK_STATUS(lion_optimizer_create(&hp, &o, &opt), LION_STATUS_INVALID_ARGUMENT);
    CHECK_ERROR_HAS("step");
    o = lion_step_options_default();
    o.cautious = LION_CAUTIOUS_SHARD;
    o.cautious_numel = 10;
    CHECK_STATUS(lion_optimizer_create(&hp, &o, &opt), LION_STATUS_INVALID_HYPERPARAMETER);
    CHECK(opt == sentinel);
    o = lion_step_options_default();

    /* NULL handles. */
    CHECK_STATUS(lion_optimizer_step(NULL, NULL, 0), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_set_lr_scale(NULL, 1), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_counts(NULL, NULL, NULL, NULL, NULL), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_load_state(NULL, NULL, 0), LION_STATUS_NULL_POINTER);

    opt = two_tensors();
    size_t n0;
    uint8_t *before = state_of(opt, &n0);

    /* Groups and tensors. */
    CHECK_STATUS(lion_optimizer_add_group(opt, &hp, &o, NULL), LION_STATUS_NULL_POINTER);
    hp.beta2 = 1.5;
    CHECK_STATUS(lion_optimizer_add_group(opt, &hp, &o, &id), LION_STATUS_INVALID_HYPERPARAMETER);
    CHECK_STATUS(lion_optimizer_set_group(opt, 0, &hp, &o), LION_STATUS_INVALID_HYPERPARAMETER);
    hp = lion_hyperparams_default();
    CHECK_STATUS(lion_optimizer_set_group(opt, 5, &hp, &o), LION_STATUS_NO_SUCH_GROUP);
    CHECK_STATUS(lion_optimizer_get_group(opt, 5, &hp, &o), LION_STATUS_NO_SUCH_GROUP);
    CHECK_STATUS(lion_optimizer_set_lr_scale(opt, -0.5), LION_STATUS_INVALID_HYPERPARAMETER);
    CHECK_STATUS(lion_optimizer_set_lr_scale(opt, INFINITY), LION_STATUS_INVALID_HYPERPARAMETER);
    lion_tensor_spec s = lion_tensor_spec_default();
    s.len = 3;
    s.group = 1;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_NO_SUCH_GROUP);
    s.group = 0;
    s.name = "w";
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_DUPLICATE_NAME);
    CHECK_ERROR_HAS("\"w\"");
    s.name = "\xff\xfe";
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_INVALID_ARGUMENT);
    CHECK_ERROR_HAS("UTF-8");
    s.name = NULL;
    s.momentum_dtype = 17;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_INVALID_ENUM);
    /* 8-bit momentum is a tensor's format (test_handle steps one); here the duplicate name is
     * what is refused. */
    s.momentum_dtype = LION_DTYPE_Q8;
    s.name = "w";
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_DUPLICATE_NAME);
    s.name = NULL;
    s.momentum_dtype = LION_DTYPE_F32;
    s.params_dtype = LION_DTYPE_Q8;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_INVALID_ENUM);
    s.params_dtype = LION_DTYPE_ANY;
    s.has_stream = 2;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_INVALID_ARGUMENT);
    s.has_stream = 0;
    s.struct_size = 0;
    CHECK_STATUS(lion_optimizer_add_tensor(opt, &s, &id), LION_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(lion_optimizer_add_tensor(opt, NULL, &id), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_tensor_id(opt, "nope", &id), LION_STATUS_NO_SUCH_TENSOR);
    CHECK_STATUS(lion_optimizer_tensor_id(opt, NULL, &id), LION_STATUS_NULL_POINTER);
    CHECK(id == 777);

    /* Steps: every tensor checked before anything is written. */
    /* (b's buffers have room for 8: a wrong length is a length error, not an overlap.) */
    float w[8], gw[8];
    uint16_t bp[8], gb[8];
    for (int i = 0; i < 8; i++) w[i] = 1.0f, gw[i] = 0.5f;
    for (int i = 0; i < 8; i++) bp[i] = 0x3f80, gb[i] = 0x3f00; /* bf16 1.0 and 0.5 */
    float w0[8];
    uint16_t bp0[8];
    memcpy(w0, w, sizeof w);
    memcpy(bp0, bp, sizeof bp);
    lion_tensor_update ok[2] = {{0, 8, w, gw, LION_DTYPE_F32, LION_DTYPE_F32},
                                {1, 4, bp, gb, LION_DTYPE_BF16, LION_DTYPE_BF16}};
    lion_tensor_update u[2];
#define STEP_REFUSED(count, want, needle)                                            \
    do {                                                                             \
        CHECK_STATUS(lion_optimizer_step(opt, u, count), want);                      \
        CHECK_ERROR_HAS(needle);                                                     \
        CHECK(memcmp(w, w0, sizeof w) == 0 && memcmp(bp, bp0, sizeof bp) == 0);      \
    } while (0)
    memcpy(u, ok, sizeof u);
    u[1].len = 5;
    STEP_REFUSED(2, LION_STATUS_LENGTH_MISMATCH, "tensor 1 (\"b\"): params has 5 elements, expected 4");
    memcpy(u, ok, sizeof u);
    u[1].params_dtype = LION_DTYPE_F16;
    STEP_REFUSED(2, LION_STATUS_DTYPE_MISMATCH, "tensor 1 (\"b\")");
    memcpy(u, ok, sizeof u);
    u[1].tensor = 2;
    STEP_REFUSED(2, LION_STATUS_NO_SUCH_TENSOR, "tensors[1]");
    memcpy(u, ok, sizeof u);
    u[1] = u[0];
    u[1].params = bp; /* the same tensor twice, other memory */
    u[1].len = 8;
    {
        float other[8], og[8];
        memcpy(other, w0, sizeof other);
        memcpy(og, gw, sizeof og);
        u[1].params = other;
        u[1].grads = og;
        STEP_REFUSED(2, LION_STATUS_DUPLICATE_TENSOR, "tensor 0 (\"w\"): passed twice");
    }
    memcpy(u, ok, sizeof u);
    u[1].grads = w; /* b's gradient aliases w's parameters */
    STEP_REFUSED(2, LION_STATUS_OVERLAP, "overlaps");
    memcpy(u, ok, sizeof u);
    u[0].grads = w;
    STEP_REFUSED(1, LION_STATUS_OVERLAP, "tensor 0 (\"w\")");
    memcpy(u, ok, sizeof u);
    u[0].params = NULL;
    STEP_REFUSED(2, LION_STATUS_NULL_POINTER, "tensor 0 (\"w\"): params is NULL");
    memcpy(u, ok, sizeof u);
    u[0].params = (uint8_t *)w + 2;
    STEP_REFUSED(1, LION_STATUS_MISALIGNED, "not aligned");
    memcpy(u, ok, sizeof u);
    u[1].grads_dtype = 99;
    STEP_REFUSED(2, LION_STATUS_INVALID_ENUM, "tensor 1 (\"b\"): grads dtype");
    CHECK_STATUS(lion_optimizer_step(opt, NULL, 2), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_step(opt, (const lion_tensor_update *)(const void *)((uint8_t *)ok + 4), 1),
                 LION_STATUS_MISALIGNED);
    /* Shared gradients are fine (read only). */
    {
        float w2[8];
        memcpy(w2, w0, sizeof w2);
        lion_optimizer *two = two_tensors();
        lion_tensor_spec s2 = lion_tensor_spec_default();
        s2.len = 8;
        CHECK_STATUS(lion_optimizer_add_tensor(two, &s2, &id), LION_STATUS_OK);
        lion_tensor_update shared[2] = {{0, 8, w2, gw, LION_DTYPE_F32, LION_DTYPE_F32},
                                        {2, 8, w, gw, LION_DTYPE_F32, LION_DTYPE_F32}};
        CHECK_STATUS(lion_optimizer_step(two, shared, 2), LION_STATUS_OK);
        CHECK(memcmp(w, w2, sizeof w) == 0 && w[0] < 1.0f);
        memcpy(w, w0, sizeof w);
        lion_optimizer_destroy(two);
    }
    uint64_t steps = 9;
    CHECK_STATUS(lion_optimizer_counts(opt, NULL, NULL, &steps, NULL), LION_STATUS_OK);
    CHECK(steps == 0);

    /* Checkpoints: nothing loaded from a bad one, the state unchanged. */
    size_t n = 0, size = 0;
    uint8_t *good = state_of(opt, &n);
    CHECK(n == n0 && memcmp(good, before, n) == 0);
    uint8_t small[16];
    memset(small, 0xab, sizeof small);
    CHECK_STATUS(lion_optimizer_save_state(opt, small, sizeof small, &size), LION_STATUS_BUFFER_TOO_SMALL);
    CHECK(size == n && small[0] == 0xab && small[15] == 0xab);
    size = 0;
    CHECK_STATUS(lion_optimizer_save_state(opt, NULL, 0, &size), LION_STATUS_OK); /* a size query */
    CHECK(size == n);
    CHECK_STATUS(lion_optimizer_save_state(opt, NULL, 10, &size), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_save_state(opt, good, n, NULL), LION_STATUS_NULL_POINTER);
    CHECK_STATUS(lion_optimizer_load_state(opt, good, n - 1), LION_STATUS_BAD_CHECKPOINT);
    CHECK_ERROR_HAS("truncated");
    CHECK_STATUS(lion_optimizer_load_state(opt, NULL, 0), LION_STATUS_BAD_CHECKPOINT);
    CHECK_STATUS(lion_optimizer_load_state(opt, NULL, 5), LION_STATUS_NULL_POINTER);
    for (size_t i = 0; i < n; i += 7) {
        good[i] ^= 0x10; /* every damaged byte is refused (CRC-32C) */
        CHECK_STATUS(lion_optimizer_load_state(opt, good, n), LION_STATUS_BAD_CHECKPOINT);
        good[i] ^= 0x10;
    }
    uint8_t junk[200];
    memset(junk, 'L', sizeof junk);
    CHECK_STATUS(lion_optimizer_load_state(opt, junk, sizeof junk), LION_STATUS_BAD_CHECKPOINT);
    CHECK_STATUS(lion_optimizer_load_safetensors(opt, junk, sizeof junk), LION_STATUS_BAD_CHECKPOINT);
    /* Another optimizer's checkpoint (another tensor set). */
    {
        lion_optimizer *other = NULL;
        CHECK_STATUS(lion_optimizer_create(NULL, NULL, &other), LION_STATUS_OK);
        size_t on;
        uint8_t *theirs = state_of(other, &on);
        CHECK_STATUS(lion_optimizer_load_state(opt, theirs, on), LION_STATUS_BAD_CHECKPOINT);
        size_t fsize = 0;
        CHECK_STATUS(lion_optimizer_save_safetensors(other, NULL, 0, &fsize), LION_STATUS_OK);
        uint8_t *file = (uint8_t *)malloc(fsize);
        CHECK_STATUS(lion_optimizer_save_safetensors(other, file, fsize, &fsize), LION_STATUS_OK);
        CHECK_STATUS(lion_optimizer_load_safetensors(opt, file, fsize), LION_STATUS_BAD_CHECKPOINT);
        free(file);
        free(theirs);
        lion_optimizer_destroy(other);
    }
    size_t n2;
    uint8_t *after = state_of(opt, &n2);
    CHECK(n2 == n0 && memcmp(after, before, n0) == 0);
    CHECK_STATUS(lion_optimizer_load_state(opt, good, n), LION_STATUS_OK);

    free(after);
    free(good);
    free(before);
    lion_optimizer_destroy(opt);
}

int main(void) {
    test_stateless_errors();
    test_last_error();
    test_handle_errors();
    return finish("test_errors");
}
