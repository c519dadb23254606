/* The optimizer handle against the crate's `Lion` (the run of examples/gen_vectors.rs): two
 * parameter groups (one with stochastic rounding, the cautious variant and skipping of
 * non-finite steps), named tensors of mixed dtypes (one with its own stream; two with 8-bit
 * momentum, LION_DTYPE_Q8), steps over subsets of the tensors in shuffled order, a
 * learning-rate schedule, a skipped step.
 *
 *  - replay: the parameters after every step and the final checkpoint, byte for byte;
 *  - resume: three steps, the compact checkpoint saved, the handle destroyed, a new handle
 *    (tensors added in the reverse order, found by name) loads it and takes the other three:
 *    the bytes of the uninterrupted run;
 *  - safetensors: saved, loaded into a new handle, saved again: the same bytes and state;
 *  - groups: get/set; counts; a second thread calling in during a step gets LION_STATUS_BUSY;
 *  - q8: a handle's 8-bit tensor stepped twice (with a checkpoint round trip between) equals
 *    two lion_step_q8 calls carrying codes and absmax.
 *
 * Run under valgrind (no leak) and the sanitizers by ci/c.sh.
 *
 *   test_handle VECTOR_DIR
 */
#include <pthread.h>
#include <time.h>

#include "vectors.h"

typedef struct {
    char name[64];
    size_t len;
    int32_t pd, gd, md;
    size_t group;
    int32_t has_stream;
    uint64_t stream;
} vtensor;

typedef struct {
    size_t tensor;
    const uint8_t *grads;
} vupdate;

typedef struct {
    double lr_scale;
    uint32_t count;
    vupdate updates[16];
    int32_t status;
    const uint8_t *params_after[16]; /* per tensor */
} vstep;

typedef struct {
    uint32_t ngroups, ntensors, nsteps;
    lion_hyperparams hp[4];
    lion_step_options opt[4];
    vtensor t[16];
    const uint8_t *params0[16];
    vstep steps[8];
    const uint8_t *state;
    size_t state_len;
} vrun;

static void rd_run(reader *r, vrun *v) {
    rd_magic(r, "LIONOPT1");
    v->ngroups = rd_u32(r);
    for (uint32_t i = 0; i < v->ngroups; i++) rd_settings(r, &v->hp[i], &v->opt[i]);
    v->ntensors = rd_u32(r);
    for (uint32_t i = 0; i < v->ntensors; i++) {
        vtensor *t = &v->t[i];
        uint32_t n = rd_u32(r);
        memcpy(t->name, rd_bytes(r, n), n);
        t->name[n] = 0;
        t->len = (size_t)rd_u64(r);
        t->pd = rd_i32(r);
        t->gd = rd_i32(r);
        t->md = rd_i32(r);
        t->group = (size_t)rd_u64(r);
        t->has_stream = rd_i32(r);
        t->stream = rd_u64(r);
    }
    for (uint32_t i = 0; i < v->ntensors; i++)
        v->params0[i] = rd_bytes(r, v->t[i].len * dtype_size(v->t[i].pd));
    v->nsteps = rd_u32(r);
    for (uint32_t s = 0; s < v->nsteps; s++) {
        vstep *st = &v->steps[s];
        st->lr_scale = rd_f64(r);
        st->count = rd_u32(r);
        for (uint32_t u = 0; u < st->count; u++) {
            st->updates[u].tensor = (size_t)rd_u64(r);
            const vtensor *t = &v->t[st->updates[u].tensor];
            st->updates[u].grads = rd_bytes(r, t->len * dtype_size(t->gd));
        }
        st->status = rd_i32(r);
        for (uint32_t i = 0; i < v->ntensors; i++)
            st->params_after[i] = rd_bytes(r, v->t[i].len * dtype_size(v->t[i].pd));
    }
    v->state_len = (size_t)rd_u64(r);
    v->state = rd_bytes(r, v->state_len);
    CHECK(r->left == 0);
}

/* Whether `hay[0..n]` contains the string `needle`. */
static int contains(const uint8_t *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return 1;
    return 0;
}

/* A handle set up as the run says; tensors added in reverse order if `reverse` (then with the
 * streams they had, if `keep_streams`). */
static lion_optimizer *setup_with(const vrun *v, int reverse, int keep_streams) {
    lion_optimizer *opt = NULL;
    CHECK_STATUS(lion_optimizer_create(&v->hp[0], &v->opt[0], &opt), LION_STATUS_OK);
    for (uint32_t g = 1; g < v->ngroups; g++) {
        size_t id = 99;
        CHECK_STATUS(lion_optimizer_add_group(opt, &v->hp[g], &v->opt[g], &id), LION_STATUS_OK);
        CHECK(id == g);
    }
    for (uint32_t k = 0; k < v->ntensors; k++) {
        uint32_t i = reverse ? v->ntensors - 1 - k : k;
        lion_tensor_spec spec = lion_tensor_spec_default();
        spec.len = v->t[i].len;
        spec.name = v->t[i].name;
        spec.params_dtype = v->t[i].pd;
        spec.momentum_dtype = v->t[i].md;
        spec.group = v->t[i].group;
        spec.has_stream = v->t[i].has_stream;
        spec.stream = v->t[i].stream;
        if (reverse && keep_streams && !spec.has_stream) {
            /* A tensor's default stream is its index: added in another order, it keeps the
             * stream it had (or the checkpoint is refused: its rounding would change). */
            spec.has_stream = 1;
            spec.stream = i;
        }
        size_t id = 99;
        CHECK_STATUS(lion_optimizer_add_tensor(opt, &spec, &id), LION_STATUS_OK);
        CHECK(id == k);
    }
    return opt;
}

static lion_optimizer *setup(const vrun *v, int reverse) { return setup_with(v, reverse, 1); }

/* The caller's parameters: copies of the initial ones. */
static void params_init(const vrun *v, void **params) {
    for (uint32_t i = 0; i < v->ntensors; i++)
        params[i] = dup_bytes(v->params0[i], v->t[i].len * dtype_size(v->t[i].pd));
}

static void params_free(const vrun *v, void **params) {
    for (uint32_t i = 0; i < v->ntensors; i++) free(params[i]);
}

/* Steps `from..to` of the run through `opt` (tensor ids by name), checking every step. */
static void replay(const vrun *v, lion_optimizer *opt, void **params, uint32_t from, uint32_t to,
                   const char *label) {
    for (uint32_t s = from; s < to; s++) {
        const vstep *st = &v->steps[s];
        lion_tensor_update ups[16];
        void *grads[16];
        CHECK_STATUS(lion_optimizer_set_lr_scale(opt, st->lr_scale), LION_STATUS_OK);
        for (uint32_t u = 0; u < st->count; u++) {
            const vtensor *t = &v->t[st->updates[u].tensor];
            size_t id = 99;
            CHECK_STATUS(lion_optimizer_tensor_id(opt, t->name, &id), LION_STATUS_OK);
            grads[u] = dup_bytes(st->updates[u].grads, t->len * dtype_size(t->gd));
            ups[u].tensor = id;
            ups[u].len = t->len;
            ups[u].params = params[st->updates[u].tensor];
            ups[u].grads = grads[u];
            ups[u].params_dtype = t->pd;
            ups[u].grads_dtype = t->gd;
        }
        CHECK_STATUS(lion_optimizer_step(opt, ups, st->count), st->status);
        for (uint32_t i = 0; i < v->ntensors; i++) {
            long d = first_difference(v->t[i].pd, params[i], st->params_after[i], v->t[i].len);
            CHECK_MSG(d < 0, "%s: step %u: tensor %s differs from Lion at element %ld", label, s,
                      v->t[i].name, d);
        }
        for (uint32_t u = 0; u < st->count; u++) free(grads[u]);
    }
}

/* The compact checkpoint of `opt` (malloc'd; its size in *len). */
static uint8_t *save(lion_optimizer *opt, size_t *len) {
    size_t n = 0, written = 0;
    CHECK_STATUS(lion_optimizer_state_size(opt, &n), LION_STATUS_OK);
    uint8_t *buf = (uint8_t *)malloc(n);
    CHECK_STATUS(lion_optimizer_save_state(opt, buf, n, &written), LION_STATUS_OK);
    CHECK(written == n);
    *len = n;
    return buf;
}

static void test_replay_and_resume(const vrun *v) {
    void *params[16];
    size_t tensors = 0, groups = 0;
    uint64_t steps = 0, skipped = 0;

    /* Uninterrupted. */
    lion_optimizer *opt = setup(v, 0);
    params_init(v, params);
    replay(v, opt, params, 0, v->nsteps, "replay");
    CHECK_STATUS(lion_optimizer_counts(opt, &tensors, &groups, &steps, &skipped), LION_STATUS_OK);
    CHECK(tensors == v->ntensors && groups == v->ngroups);
    uint64_t applied = 0, skips = 0;
    for (uint32_t s = 0; s < v->nsteps; s++) {
        applied += v->steps[s].status == LION_STATUS_OK;
        skips += v->steps[s].status == LION_STATUS_SKIPPED_NON_FINITE;
    }
    CHECK(skips >= 1);
    CHECK(steps == applied && skipped == skips);
    size_t n = 0;
    uint8_t *state = save(opt, &n);
    CHECK_MSG(n == v->state_len && memcmp(state, v->state, n) == 0,
              "the checkpoint differs from Lion's (%zu vs %zu bytes)", n, v->state_len);

    /* safetensors: save, load into a fresh handle, save again. */
    size_t st_len = 0, st_len2 = 0;
    CHECK_STATUS(lion_optimizer_save_safetensors(opt, NULL, 0, &st_len), LION_STATUS_OK);
    uint8_t *file = (uint8_t *)malloc(st_len);
    CHECK_STATUS(lion_optimizer_save_safetensors(opt, file, st_len - 1, &st_len2),
                 LION_STATUS_BUFFER_TOO_SMALL);
    CHECK(st_len2 == st_len);
    CHECK_STATUS(lion_optimizer_save_safetensors(opt, file, st_len, &st_len2), LION_STATUS_OK);
    CHECK(contains(file, st_len, "embed.weight.exp_avg"));
    /* 8-bit momentum: codes and scales, as two tensors. */
    CHECK(contains(file, st_len, "layer1.weight.exp_avg.codes") &&
          contains(file, st_len, "layer1.weight.exp_avg.absmax"));
    lion_optimizer *copy = setup(v, 0);
    CHECK_STATUS(lion_optimizer_load_safetensors(copy, file, st_len), LION_STATUS_OK);
    size_t n2 = 0;
    uint8_t *state2 = save(copy, &n2);
    CHECK_MSG(n2 == n && memcmp(state2, state, n) == 0,
              "the state loaded from safetensors differs from the original");
    free(state2);
    free(file);
    lion_optimizer_destroy(copy);
    params_free(v, params);
    free(state);
    lion_optimizer_destroy(opt);

    /* Interrupted after three steps, resumed in a new handle with another tensor order. */
    uint32_t half = v->nsteps / 2;
    opt = setup(v, 0);
    params_init(v, params);
    replay(v, opt, params, 0, half, "first half");
    size_t cn = 0;
    uint8_t *checkpoint = save(opt, &cn);
    lion_optimizer_destroy(opt);
    /* Reordered tensors with their default streams (their new indices) would round otherwise:
     * the checkpoint is refused. */
    opt = setup_with(v, 1, 0);
    CHECK_STATUS(lion_optimizer_load_state(opt, checkpoint, cn), LION_STATUS_BAD_CHECKPOINT);
    CHECK_ERROR_HAS("stream");
    lion_optimizer_destroy(opt);
    opt = setup(v, 1);
    CHECK_STATUS(lion_optimizer_load_state(opt, checkpoint, cn), LION_STATUS_OK);
    replay(v, opt, params, half, v->nsteps, "resumed");
    CHECK_STATUS(lion_optimizer_counts(opt, NULL, NULL, &steps, &skipped), LION_STATUS_OK);
    CHECK(steps == applied && skipped == skips);
    free(checkpoint);
    params_free(v, params);
    lion_optimizer_destroy(opt);
}

static void test_groups(const vrun *v) {
    lion_optimizer *opt = setup(v, 0);
    lion_hyperparams hp;
    lion_step_options o;
    CHECK_STATUS(lion_optimizer_get_group(opt, 1, &hp, &o), LION_STATUS_OK);
    CHECK(hp.struct_size == sizeof hp && o.struct_size == sizeof o);
    CHECK(hp.lr == v->hp[1].lr && hp.weight_decay == v->hp[1].weight_decay);
    CHECK(o.rounding == LION_ROUNDING_STOCHASTIC && o.seed == v->opt[1].seed);
    CHECK(o.cautious == LION_CAUTIOUS_WHOLE && o.skip_non_finite == 1);
    hp.lr = 0.125;
    o.maximize = 1;
    o.max_lr = 0.5;
    CHECK_STATUS(lion_optimizer_set_group(opt, 1, &hp, &o), LION_STATUS_OK);
    lion_hyperparams hp2;
    lion_step_options o2;
    CHECK_STATUS(lion_optimizer_get_group(opt, 1, &hp2, &o2), LION_STATUS_OK);
    CHECK(memcmp(&hp2.lr, &hp.lr, sizeof(double)) == 0 && o2.maximize == 1 && o2.max_lr == 0.5);
    CHECK_STATUS(lion_optimizer_get_group(opt, 0, NULL, NULL), LION_STATUS_OK);
    /* A name of the handle, and the default options from NULL. */
    size_t id = 99;
    CHECK_STATUS(lion_optimizer_tensor_id(opt, "norm.weight", &id), LION_STATUS_OK);
    CHECK(id == 3);
    lion_optimizer *plain = NULL;
    CHECK_STATUS(lion_optimizer_create(NULL, NULL, &plain), LION_STATUS_OK);
    CHECK_STATUS(lion_optimizer_get_group(plain, 0, &hp, &o), LION_STATUS_OK);
    CHECK(hp.lr == 1e-4 && hp.beta1 == 0.9 && hp.beta2 == 0.99 && o.rounding == LION_ROUNDING_NEAREST);
    /* A step over no tensors counts as a step. */
    uint64_t steps = 9;
    CHECK_STATUS(lion_optimizer_step(plain, NULL, 0), LION_STATUS_OK);
    CHECK_STATUS(lion_optimizer_counts(plain, NULL, NULL, &steps, NULL), LION_STATUS_OK);
    CHECK(steps == 1);
    lion_optimizer_destroy(plain);
    lion_optimizer_destroy(opt);
    lion_optimizer_destroy(NULL);
}

/* A handle's 8-bit tensor against lion_step_q8: two steps, the second after the state went
 * through a compact checkpoint into a new handle. */
static void test_q8_handle(void) {
    enum { L = 600, B = (L + 255) / 256 };
    lion_hyperparams hp = lion_hyperparams_default();
    hp.lr = 0.01;
    hp.weight_decay = 0.1;
    lion_step_options o = lion_step_options_default();
    lion_optimizer *a = NULL, *b = NULL;
    CHECK_STATUS(lion_optimizer_create(&hp, &o, &a), LION_STATUS_OK);
    CHECK_STATUS(lion_optimizer_create(&hp, &o, &b), LION_STATUS_OK);
    lion_tensor_spec spec = lion_tensor_spec_default();
    spec.len = L;
    spec.momentum_dtype = LION_DTYPE_Q8;
    spec.params_dtype = LION_DTYPE_F32;
    spec.name = "q8.weight";
    size_t id = 99;
    CHECK_STATUS(lion_optimizer_add_tensor(a, &spec, &id), LION_STATUS_OK);
    CHECK(id == 0);
    CHECK_STATUS(lion_optimizer_add_tensor(b, &spec, &id), LION_STATUS_OK);
    static float p_h[L], p_s[L], g1[L], g2[L], absmax[B];
    static uint8_t codes[L];
    for (int i = 0; i < L; i++) {
        p_h[i] = p_s[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
        g1[i] = (float)((i * 104729) % 777) / 777.0f - 0.5f;
        g2[i] = (i % 3 ? 0.25f : -0.75f) * (float)(i % 11) / 11.0f;
        codes[i] = 127; /* zero momentum */
    }
    for (int k = 0; k < B; k++) absmax[k] = 0.0f;

    lion_tensor_update u = {0, L, p_h, g1, LION_DTYPE_F32, LION_DTYPE_F32};
    CHECK_STATUS(lion_optimizer_step(a, &u, 1), LION_STATUS_OK);
    CHECK_STATUS(lion_step_q8(p_s, LION_DTYPE_F32, g1, LION_DTYPE_F32, codes, absmax, L, &hp, &o),
                 LION_STATUS_OK);
    CHECK_MSG(memcmp(p_h, p_s, sizeof p_h) == 0, "q8: the handle's first step differs from lion_step_q8");
    CHECK(absmax[0] > 0 && absmax[B - 1] > 0);

    size_t n = 0, n2 = 0;
    uint8_t *state = save(a, &n);
    CHECK_STATUS(lion_optimizer_load_state(b, state, n), LION_STATUS_OK);
    uint8_t *state2 = save(b, &n2);
    CHECK_MSG(n2 == n && memcmp(state, state2, n) == 0, "q8: the checkpoint did not round-trip");
    /* safetensors too. */
    size_t st_len = 0;
    CHECK_STATUS(lion_optimizer_save_safetensors(b, NULL, 0, &st_len), LION_STATUS_OK);
    uint8_t *file = (uint8_t *)malloc(st_len);
    CHECK_STATUS(lion_optimizer_save_safetensors(b, file, st_len, &st_len), LION_STATUS_OK);
    CHECK(contains(file, st_len, "q8.weight.exp_avg.codes"));
    CHECK_STATUS(lion_optimizer_load_safetensors(a, file, st_len), LION_STATUS_OK);

    u.grads = g2;
    CHECK_STATUS(lion_optimizer_step(b, &u, 1), LION_STATUS_OK);
    CHECK_STATUS(lion_step_q8(p_s, LION_DTYPE_F32, g2, LION_DTYPE_F32, codes, absmax, L, &hp, &o),
                 LION_STATUS_OK);
    CHECK_MSG(memcmp(p_h, p_s, sizeof p_h) == 0,
              "q8: the restored handle's second step differs from lion_step_q8");
    free(file);
    free(state);
    free(state2);
    lion_optimizer_destroy(a);
    lion_optimizer_destroy(b);
}

/* A second thread calling in during steps gets LION_STATUS_BUSY (never a race). */
enum { BIG = 1 << 21 };
typedef struct {
    lion_optimizer *opt;
    volatile int done;
    unsigned long busy, ok, other;
} shared;

static void *reader_thread(void *arg) {
    shared *s = (shared *)arg;
    while (!s->done) {
        uint64_t steps;
        lion_status st = lion_optimizer_counts(s->opt, NULL, NULL, &steps, NULL);
        if (st == LION_STATUS_BUSY) s->busy++;
        else if (st == LION_STATUS_OK) s->ok++;
        else s->other++;
    }
    return NULL;
}

static void test_busy(void) {
    shared s = {NULL, 0, 0, 0, 0};
    CHECK_STATUS(lion_optimizer_create(NULL, NULL, &s.opt), LION_STATUS_OK);
    lion_tensor_spec spec = lion_tensor_spec_default();
    spec.len = BIG;
    size_t id;
    CHECK_STATUS(lion_optimizer_add_tensor(s.opt, &spec, &id), LION_STATUS_OK);
    float *p = (float *)calloc(BIG, 4), *g = (float *)calloc(BIG, 4);
    lion_tensor_update u = {id, BIG, p, g, LION_DTYPE_F32, LION_DTYPE_F32};
    pthread_t th;
    pthread_create(&th, NULL, reader_thread, &s);
    time_t start = time(NULL);
    int steps = 0;
    /* Until the reader has met a running step (at most ~10 s; a few steps on a quiet CPU). */
    while ((s.busy == 0 || steps < 3) && time(NULL) - start < 10) {
        /* The step is the writer: it gets BUSY too while the reader holds the handle. */
        lion_status st = lion_optimizer_step(s.opt, &u, 1);
        if (st == LION_STATUS_BUSY) continue;
        CHECK_STATUS(st, LION_STATUS_OK);
        steps++;
    }
    s.done = 1;
    pthread_join(th, NULL);
    CHECK_MSG(s.busy > 0, "the reader never met a running step (%d steps)", steps);
    CHECK(s.other == 0);
    printf("busy test: %d steps; the other thread got BUSY %lu times, OK %lu times\n", steps,
           s.busy, s.ok);
    free(p);
    free(g);
    lion_optimizer_destroy(s.opt);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    reader r = reader_open(dir, "handle.vec");
    vrun *v = (vrun *)calloc(1, sizeof(vrun));
    rd_run(&r, v);
    test_replay_and_resume(v);
    test_groups(v);
    test_q8_handle();
    if (!getenv("LION_TEST_NO_THREADS")) test_busy();
    free(v);
    reader_free(&r);
    return finish("test_handle");
}
