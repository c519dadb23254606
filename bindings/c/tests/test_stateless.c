/* Bit-identity of the stateless calls with the crate's specification, for every dtype
 * combination, hyperparameter set, option set (stochastic rounding with step/offset/stream,
 * cautious whole and shard, maximize, unscaling, decoupled decay, skipping) and lengths that
 * cross every vector width: lion_step, lion_cautious_count and lion_all_finite against the
 * vectors of examples/gen_vectors.rs. Then the shard fields: every case stepped in two pieces
 * (each with its offset; cautious: with the pieces' added counts) gives the bytes of the whole.
 * The same for 8-bit momentum (lion_step_q8, lion_cautious_count_q8) against q8.vec, split at a
 * block boundary.
 *
 *   test_stateless VECTOR_DIR
 */
#include "vectors.h"

static unsigned long nan_payload_differences;

/* Counts elements that match only as "both NaN" (reported, not a failure). */
static void count_nan_only(int32_t d, const void *a, const void *b, size_t len) {
    size_t s = dtype_size(d);
    for (size_t i = 0; i < len; i++) {
        if (memcmp((const uint8_t *)a + i * s, (const uint8_t *)b + i * s, s) != 0)
            nan_payload_differences++;
    }
}

static void describe(const vcase *c, char *out, size_t cap) {
    snprintf(out, cap,
             "p=%s g=%s m=%s len=%zu lr=%g b1=%g b2=%g wd=%g max=%d skip=%d round=%d "
             "cautious=%d unscale=%g max_lr=%g seed=%" PRIu64 " step=%" PRIu64 " offset=%" PRIu64
             " stream=%" PRIu64,
             dtype_name(c->pd), dtype_name(c->gd), dtype_name(c->md), c->len, c->hp.lr,
             c->hp.beta1, c->hp.beta2, c->hp.weight_decay, c->opt.maximize,
             c->opt.skip_non_finite, (int)c->opt.rounding, (int)c->opt.cautious,
             c->opt.grad_unscale, c->opt.max_lr, c->opt.seed, c->opt.step, c->opt.offset,
             c->opt.stream);
}

/* lion_step, the count and the finiteness check of one case against the specification. */
static void run_case(const vcase *c) {
    char what[512];
    size_t pb = c->len * dtype_size(c->pd), mb = c->len * dtype_size(c->md);
    void *p = dup_bytes(c->p0, pb), *m = dup_bytes(c->m0, mb);
    void *g = dup_bytes(c->g, c->len * dtype_size(c->gd));
    describe(c, what, sizeof what);

    lion_status st = lion_step(p, c->pd, g, c->gd, m, c->md, c->len, &c->hp, &c->opt);
    CHECK_MSG(st == c->status, "lion_step returned %s, the specification %s (%s) [%s]",
              lion_status_name(st), lion_status_name(c->status), last_error(), what);
    long dp = first_difference(c->pd, p, c->p1, c->len);
    long dm = first_difference(c->md, m, c->m1, c->len);
    CHECK_MSG(dp < 0, "params differ from the specification at %ld [%s]", dp, what);
    CHECK_MSG(dm < 0, "momentum differs from the specification at %ld [%s]", dm, what);
    count_nan_only(c->pd, p, c->p1, c->len);
    count_nan_only(c->md, m, c->m1, c->len);

    /* (The vectors sit unaligned in the file: copies.) */
    void *m0 = dup_bytes(c->m0, mb);
    uint64_t count = 0xdeadbeef;
    st = lion_cautious_count(g, c->gd, m0, c->md, c->len, &c->hp, &c->opt, &count);
    CHECK_MSG(st == c->count_status, "lion_cautious_count returned %s, expected %s [%s]",
              lion_status_name(st), lion_status_name(c->count_status), what);
    CHECK_MSG(st != LION_STATUS_OK || count == c->count,
              "cautious count %" PRIu64 ", the specification %" PRIu64 " [%s]", count, c->count,
              what);
    CHECK(st == LION_STATUS_OK || count == 0xdeadbeef);

    int32_t finite = -1;
    st = lion_all_finite(g, c->gd, c->len, &c->opt, &finite);
    if (st == LION_STATUS_OK) {
        CHECK_MSG(finite == c->finite, "all_finite %d, the specification %d [%s]", finite,
                  c->finite, what);
    } else {
        /* Invalid options (e.g. a negative grad_unscale): refused, nothing written. */
        CHECK_MSG(st == LION_STATUS_INVALID_HYPERPARAMETER && finite == -1,
                  "all_finite returned %s [%s]", lion_status_name(st), what);
    }
    free(p);
    free(m);
    free(m0);
    free(g);
}

/* Cautious in two pieces: their counts n1 and n2 must add to the whole's; then both pieces (options
 * a and b) are stepped as shards of the whole (len elements) with that count. */
static void as_shards(lion_step_options *a, lion_step_options *b, uint64_t n1, uint64_t n2,
                      uint64_t whole, size_t len, const char *label, const char *what) {
    CHECK_MSG(n1 + n2 == whole, "%spieces count %" PRIu64 ", the whole %" PRIu64 " [%s]", label,
              n1 + n2, whole, what);
    a->cautious = b->cautious = LION_CAUTIOUS_SHARD;
    a->cautious_agreeing = b->cautious_agreeing = n1 + n2;
    a->cautious_numel = b->cautious_numel = len;
}

/* The same case in two pieces: [0, k) at offset o and [k, len) at offset o + k (cautious: both
 * stepped as shards with the added counts of the pieces) must give the bytes of the whole. */
static void run_split(const vcase *c) {
    if (c->status != LION_STATUS_OK || c->len < 2 || c->opt.skip_non_finite) return;
    if (c->opt.cautious == LION_CAUTIOUS_WHOLE && c->opt.offset != 0) return;
    char what[512];
    describe(c, what, sizeof what);
    size_t ps = dtype_size(c->pd), gs = dtype_size(c->gd), ms = dtype_size(c->md);
    size_t k = c->len / 3 + 1;
    uint8_t *p = (uint8_t *)dup_bytes(c->p0, c->len * ps), *m = (uint8_t *)dup_bytes(c->m0, c->len * ms);
    uint8_t *g = (uint8_t *)dup_bytes(c->g, c->len * gs);
    lion_step_options a = c->opt, b = c->opt;
    if (c->opt.cautious == LION_CAUTIOUS_WHOLE) {
        uint64_t n1 = 0, n2 = 0;
        b.offset = c->opt.offset + k;
        CHECK_STATUS(lion_cautious_count(g, c->gd, m, c->md, k, &c->hp, &a, &n1), LION_STATUS_OK);
        CHECK_STATUS(lion_cautious_count(g + k * gs, c->gd, m + k * ms, c->md, c->len - k, &c->hp,
                                         &b, &n2),
                     LION_STATUS_OK);
        as_shards(&a, &b, n1, n2, c->count, c->len, "", what);
    }
    b.offset = c->opt.offset + k;
    CHECK_STATUS(lion_step(p, c->pd, g, c->gd, m, c->md, k, &c->hp, &a), LION_STATUS_OK);
    CHECK_STATUS(lion_step(p + k * ps, c->pd, g + k * gs, c->gd, m + k * ms, c->md, c->len - k,
                           &c->hp, &b),
                 LION_STATUS_OK);
    long dp = first_difference(c->pd, p, c->p1, c->len);
    long dm = first_difference(c->md, m, c->m1, c->len);
    CHECK_MSG(dp < 0 && dm < 0, "two pieces differ from the whole at %ld/%ld [%s]", dp, dm, what);
    free(p);
    free(m);
    free(g);
}

static void describe_q8(const vq8case *c, char *out, size_t cap) {
    snprintf(out, cap,
             "q8: p=%s g=%s len=%zu lr=%g b1=%g b2=%g wd=%g max=%d skip=%d round=%d "
             "cautious=%d unscale=%g max_lr=%g seed=%" PRIu64 " step=%" PRIu64 " offset=%" PRIu64
             " stream=%" PRIu64,
             dtype_name(c->pd), dtype_name(c->gd), c->len, c->hp.lr, c->hp.beta1, c->hp.beta2,
             c->hp.weight_decay, c->opt.maximize, c->opt.skip_non_finite, (int)c->opt.rounding,
             (int)c->opt.cautious, c->opt.grad_unscale, c->opt.max_lr, c->opt.seed, c->opt.step,
             c->opt.offset, c->opt.stream);
}

/* The momentum of a q8 step against the specification: codes, and the absmax bit for bit
 * (NaN matching NaN). */
static void check_q8_momentum(const vq8case *c, const uint8_t *codes, const float *absmax,
                              const char *label, const char *what) {
    long dc = -1;
    for (size_t i = 0; i < c->len && dc < 0; i++)
        if (codes[i] != c->c1[i]) dc = (long)i;
    long da = first_difference(LION_DTYPE_F32, absmax, c->a1, c->blocks);
    CHECK_MSG(dc < 0, "%s: codes differ from the specification at %ld [%s]", label, dc, what);
    CHECK_MSG(da < 0, "%s: absmax differs from the specification at block %ld [%s]", label, da,
              what);
    count_nan_only(LION_DTYPE_F32, absmax, c->a1, c->blocks);
}

/* lion_step_q8 and lion_cautious_count_q8 of one case against the specification. */
static void run_q8_case(const vq8case *c) {
    char what[512];
    describe_q8(c, what, sizeof what);
    size_t pb = c->len * dtype_size(c->pd);
    void *p = dup_bytes(c->p0, pb), *g = dup_bytes(c->g, c->len * dtype_size(c->gd));
    uint8_t *codes = (uint8_t *)dup_bytes(c->c0, c->len);
    float *absmax = (float *)dup_bytes(c->a0, c->blocks * 4);

    lion_status st = lion_step_q8(p, c->pd, g, c->gd, codes, absmax, c->len, &c->hp, &c->opt);
    CHECK_MSG(st == c->status, "lion_step_q8 returned %s, the specification %s (%s) [%s]",
              lion_status_name(st), lion_status_name(c->status), last_error(), what);
    long dp = first_difference(c->pd, p, c->p1, c->len);
    CHECK_MSG(dp < 0, "q8: params differ from the specification at %ld [%s]", dp, what);
    count_nan_only(c->pd, p, c->p1, c->len);
    check_q8_momentum(c, codes, absmax, "whole", what);
    if (st != LION_STATUS_OK && st != LION_STATUS_SKIPPED_NON_FINITE) {
        /* An error writes nothing. */
        CHECK(memcmp(p, c->p0, pb) == 0 && memcmp(codes, c->c0, c->len) == 0 &&
              memcmp(absmax, c->a0, c->blocks * 4) == 0);
    }

    const uint8_t *c0 = (const uint8_t *)dup_bytes(c->c0, c->len);
    const float *a0 = (const float *)dup_bytes(c->a0, c->blocks * 4);
    uint64_t count = 0xdeadbeef;
    st = lion_cautious_count_q8(g, c->gd, c0, a0, c->len, &c->hp, &c->opt, &count);
    CHECK_MSG(st == c->count_status, "lion_cautious_count_q8 returned %s, expected %s (%s) [%s]",
              lion_status_name(st), lion_status_name(c->count_status), last_error(), what);
    CHECK_MSG(st != LION_STATUS_OK || count == c->count,
              "q8 cautious count %" PRIu64 ", the specification %" PRIu64 " [%s]", count,
              c->count, what);
    CHECK(st == LION_STATUS_OK || count == 0xdeadbeef);
    free(p);
    free(g);
    free(codes);
    free(absmax);
    free((void *)c0);
    free((void *)a0);
}

/* The case in two shards split at a block boundary (256 * k): each with its offset, codes and
 * absmax from its first block; cautious: as shards with the pieces' added counts. */
static int run_q8_split(const vq8case *c) {
    if (c->status != LION_STATUS_OK || c->len <= 256 || c->opt.skip_non_finite) return 0;
    if (c->opt.cautious == LION_CAUTIOUS_WHOLE && c->opt.offset != 0) return 0;
    char what[512];
    describe_q8(c, what, sizeof what);
    size_t ps = dtype_size(c->pd), gs = dtype_size(c->gd);
    size_t kb = c->blocks / 2 ? c->blocks / 2 : 1, k = 256 * kb;
    uint8_t *p = (uint8_t *)dup_bytes(c->p0, c->len * ps);
    uint8_t *g = (uint8_t *)dup_bytes(c->g, c->len * gs);
    uint8_t *codes = (uint8_t *)dup_bytes(c->c0, c->len);
    float *absmax = (float *)dup_bytes(c->a0, c->blocks * 4);
    lion_step_options a = c->opt, b = c->opt;
    b.offset = c->opt.offset + k;
    if (c->opt.cautious == LION_CAUTIOUS_WHOLE) {
        uint64_t n1 = 0, n2 = 0;
        CHECK_STATUS(lion_cautious_count_q8(g, c->gd, codes, absmax, k, &c->hp, &a, &n1),
                     LION_STATUS_OK);
        CHECK_STATUS(lion_cautious_count_q8(g + k * gs, c->gd, codes + k, absmax + kb, c->len - k,
                                            &c->hp, &b, &n2),
                     LION_STATUS_OK);
        as_shards(&a, &b, n1, n2, c->count, c->len, "q8 ", what);
    }
    CHECK_STATUS(lion_step_q8(p, c->pd, g, c->gd, codes, absmax, k, &c->hp, &a), LION_STATUS_OK);
    CHECK_STATUS(lion_step_q8(p + k * ps, c->pd, g + k * gs, c->gd, codes + k, absmax + kb,
                              c->len - k, &c->hp, &b),
                 LION_STATUS_OK);
    long dp = first_difference(c->pd, p, c->p1, c->len);
    CHECK_MSG(dp < 0, "q8: two shards' params differ from the whole at %ld [%s]", dp, what);
    check_q8_momentum(c, codes, absmax, "two shards", what);
    free(p);
    free(g);
    free(codes);
    free(absmax);
    return 1;
}

static void test_q8(const char *dir) {
    reader r = reader_open(dir, "q8.vec");
    rd_magic(&r, "LIONQ8V1");
    uint32_t n = rd_u32(&r);
    unsigned combos_seen[9] = {0}, splits = 0, stochastic = 0, cautious = 0, errors = 0;
    for (uint32_t i = 0; i < n; i++) {
        vq8case c;
        rd_q8case(&r, &c);
        combos_seen[c.pd * 3 + c.gd]++;
        stochastic += c.status == LION_STATUS_OK && c.opt.rounding == LION_ROUNDING_STOCHASTIC;
        cautious += c.status == LION_STATUS_OK && c.opt.cautious == LION_CAUTIOUS_WHOLE;
        errors += c.status < 0;
        run_q8_case(&c);
        splits += (unsigned)run_q8_split(&c);
    }
    CHECK(r.left == 0);
    for (int i = 0; i < 9; i++) CHECK_MSG(combos_seen[i] > 0, "q8: dtype combination %d untested", i);
    CHECK(splits > 0 && stochastic > 0 && cautious > 0 && errors > 0);
    reader_free(&r);
    printf("%u q8 cases, 9 dtype combinations, %u split in two shards, %u with an error\n", n,
           splits, errors);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    CHECK(lion_optim_version() == LION_OPTIM_VERSION);
    printf("lion_optim %s on the %s backend\n", lion_optim_version_string(), lion_backend_name());

    reader r = reader_open(dir, "stateless.vec");
    rd_magic(&r, "LIONVEC1");
    uint32_t n = rd_u32(&r);
    unsigned combos_seen[27] = {0};
    for (uint32_t i = 0; i < n; i++) {
        vcase c;
        rd_case(&r, &c);
        combos_seen[c.pd * 9 + c.gd * 3 + c.md]++;
        run_case(&c);
        run_split(&c);
    }
    CHECK(r.left == 0);
    for (int i = 0; i < 27; i++) CHECK_MSG(combos_seen[i] > 0, "dtype combination %d untested", i);
    reader_free(&r);
    printf("%u cases, 27 dtype combinations; %lu elements matched as NaN with other payloads\n",
           n, nan_payload_differences);
    test_q8(dir);
    return finish("test_stateless");
}
