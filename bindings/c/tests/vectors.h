/* Readers of the test vectors that `cargo run -p lion-optim-c --example gen_vectors -- DIR`
 * writes (computed by the crate's specification, lion_optim::reference): little-endian. */
#ifndef LION_TEST_VECTORS_H
#define LION_TEST_VECTORS_H

#include "check.h"

typedef struct {
    const uint8_t *at;
    size_t left;
    uint8_t *data; /* the whole file (freed by reader_free) */
} reader;

static inline reader reader_open(const char *dir, const char *name) {
    char path[4096];
    reader r = {0, 0, 0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (generate it: cargo run --release -p lion-optim-c "
                        "--example gen_vectors -- %s)\n", path, dir);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    r.data = (uint8_t *)malloc((size_t)n + 1);
    if (!r.data || fread(r.data, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    r.at = r.data;
    r.left = (size_t)n;
    return r;
}

static inline void reader_free(reader *r) {
    free(r->data);
    r->data = NULL;
}

static inline const uint8_t *rd_bytes(reader *r, size_t n) {
    if (n > r->left) {
        fprintf(stderr, "test vectors: truncated file\n");
        exit(2);
    }
    const uint8_t *p = r->at;
    r->at += n;
    r->left -= n;
    return p;
}

static inline uint32_t rd_u32(reader *r) {
    const uint8_t *p = rd_bytes(r, 4);
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int32_t rd_i32(reader *r) {
    uint32_t u = rd_u32(r);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static inline uint64_t rd_u64(reader *r) {
    uint64_t lo = rd_u32(r);
    uint64_t hi = rd_u32(r);
    return lo | hi << 32;
}

static inline double rd_f64(reader *r) {
    uint64_t u = rd_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

static inline void rd_magic(reader *r, const char *magic) {
    if (memcmp(rd_bytes(r, 8), magic, 8) != 0) {
        fprintf(stderr, "test vectors: not a %s file\n", magic);
        exit(2);
    }
}

/* Hyperparameters and options, as the generator writes them (Out::settings). */
static inline void rd_settings(reader *r, lion_hyperparams *hp, lion_step_options *o) {
    *hp = lion_hyperparams_default();
    hp->lr = rd_f64(r);
    hp->beta1 = rd_f64(r);
    hp->beta2 = rd_f64(r);
    hp->weight_decay = rd_f64(r);
    *o = lion_step_options_default();
    o->maximize = rd_i32(r);
    o->skip_non_finite = rd_i32(r);
    o->rounding = (lion_rounding)rd_i32(r);
    o->cautious = (lion_cautious)rd_i32(r);
    o->grad_unscale = rd_f64(r);
    o->max_lr = rd_f64(r);
    o->seed = rd_u64(r);
    o->step = rd_u64(r);
    o->offset = rd_u64(r);
    o->stream = rd_u64(r);
    o->cautious_agreeing = rd_u64(r);
    o->cautious_numel = rd_u64(r);
}

/* One stateless case. */
typedef struct {
    int32_t pd, gd, md;
    size_t len;
    lion_hyperparams hp;
    lion_step_options opt;
    int32_t status, count_status, finite;
    uint64_t count;
    const uint8_t *p0, *g, *m0, *p1, *m1;
} vcase;

static inline void rd_case(reader *r, vcase *c) {
    c->pd = rd_i32(r);
    c->gd = rd_i32(r);
    c->md = rd_i32(r);
    c->len = (size_t)rd_u64(r);
    rd_settings(r, &c->hp, &c->opt);
    c->status = rd_i32(r);
    c->count_status = rd_i32(r);
    c->count = rd_u64(r);
    c->finite = rd_i32(r);
    c->p0 = rd_bytes(r, c->len * dtype_size(c->pd));
    c->g = rd_bytes(r, c->len * dtype_size(c->gd));
    c->m0 = rd_bytes(r, c->len * dtype_size(c->md));
    c->p1 = rd_bytes(r, c->len * dtype_size(c->pd));
    c->m1 = rd_bytes(r, c->len * dtype_size(c->md));
}

/* One 8-bit momentum case (q8.vec): codes are len bytes, absmax (len + 255) / 256 floats. */
typedef struct {
    int32_t pd, gd;
    size_t len, blocks;
    lion_hyperparams hp;
    lion_step_options opt;
    int32_t status, count_status;
    uint64_t count;
    const uint8_t *p0, *g, *c0, *a0, *p1, *c1, *a1;
} vq8case;

static inline void rd_q8case(reader *r, vq8case *c) {
    c->pd = rd_i32(r);
    c->gd = rd_i32(r);
    c->len = (size_t)rd_u64(r);
    c->blocks = (c->len + 255) / 256;
    rd_settings(r, &c->hp, &c->opt);
    c->status = rd_i32(r);
    c->count_status = rd_i32(r);
    c->count = rd_u64(r);
    c->p0 = rd_bytes(r, c->len * dtype_size(c->pd));
    c->g = rd_bytes(r, c->len * dtype_size(c->gd));
    c->c0 = rd_bytes(r, c->len);
    c->a0 = rd_bytes(r, c->blocks * 4);
    c->p1 = rd_bytes(r, c->len * dtype_size(c->pd));
    c->c1 = rd_bytes(r, c->len);
    c->a1 = rd_bytes(r, c->blocks * 4);
}

#endif /* LION_TEST_VECTORS_H */
