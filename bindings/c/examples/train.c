/* A real training run with lion_optim from C: the spirals MLP of the Rust example
 * (examples/train/src/main.rs) in plain C11 — a 2 -> 64 tanh -> 3 softmax network learns to
 * separate three interleaved 2-D spirals (2400 training / 600 test points from a fixed seed),
 * forward and backward pass by hand, mini-batches of 32, 120 epochs, lr 3e-3 with warm-up and
 * cosine decay.
 *
 * The optimizer is a lion_optimizer handle set up as for a real model: two parameter groups
 * (weight decay 0.1 on the weight matrices, none on the biases), every tensor added by name,
 * one lion_optimizer_step per mini-batch over all four tensors, the schedule through
 * lion_optimizer_set_lr_scale. Four runs from the same initial weights:
 *   f32           f32 parameters and momentum
 *   bf16          bf16 parameters and momentum, round to nearest: meant to stall (Lion moves
 *                 each weight by exactly lr, and a bf16 store rounds moves under half the bf16
 *                 spacing away)
 *   bf16 + SR     the same with stochastic rounding: trains as well as f32
 *   f32 cautious  the cautious variant
 * It prints the loss table and exits non-zero unless the runs learn as they should.
 *
 *   cc -std=c11 -O2 train.c $(pkg-config --cflags --libs lion_optim) -lm -o train && ./train
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lion_optim.h>

enum { CLASSES = 3, HIDDEN = 64, PER_CLASS = 1000, EPOCHS = 120, BATCH = 32, TENSORS = 4 };
static const double LR = 3e-3, WEIGHT_DECAY = 0.1, WARMUP = 0.05;
static const uint64_t SEED = 0x5eed;

/* ---- xorshift64* with a Box-Muller normal (the Rust example's generator) ---- */
typedef struct {
    uint64_t s;
} rng;

static rng rng_new(uint64_t seed) {
    rng r = {((seed ^ 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull) | 1};
    return r;
}
static uint64_t rng_next(rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}
static float rng_uniform(rng *r) { return (float)(rng_next(r) >> 40) / (float)(1u << 24); }
static float rng_normal(rng *r) {
    float u1 = 1.0f - rng_uniform(r), u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831855f * u2);
}
static void shuffle_idx(rng *r, size_t *v, size_t n) {
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next(r) % (i + 1)), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* ---- bf16: the upper half of a float ---- */
static float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t bf16_from_f32(float f) { /* round to nearest, ties to even (finite inputs) */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ---- the data: three spiral arms, shuffled, split 80/20 ---- */
typedef struct {
    float x[2];
    int label;
} sample;

static sample data[CLASSES * PER_CLASS];
static size_t n_train, n_test;

static void make_spirals(void) {
    rng r = rng_new(SEED);
    size_t n = 0;
    for (int label = 0; label < CLASSES; label++) {
        for (int i = 0; i < PER_CLASS; i++) {
            float radius = ((float)i + 0.5f) / (float)PER_CLASS;
            float turn = 6.2831855f / (float)CLASSES;
            float theta = (float)label * turn + 4.0f * radius + 0.2f * rng_normal(&r);
            data[n].x[0] = radius * sinf(theta);
            data[n].x[1] = radius * cosf(theta);
            data[n].label = label;
            n++;
        }
    }
    for (size_t i = n - 1; i > 0; i--) { /* the same shuffle as the index shuffle */
        size_t j = (size_t)(rng_next(&r) % (i + 1));
        sample t = data[i];
        data[i] = data[j];
        data[j] = t;
    }
    n_test = n - n * 4 / 5;
    n_train = n - n_test;
}

/* ---- the model: w0 (64x2), b0 (64), w1 (3x64), b1 (3); parameters f32 or bf16 ---- */
static const size_t LEN[TENSORS] = {HIDDEN * 2, HIDDEN, CLASSES * HIDDEN, CLASSES};
static const char *NAME[TENSORS] = {"layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"};

typedef struct {
    const char *name;
    int bf16;      /* parameters and momentum in bf16 */
    int rounding;  /* lion_rounding */
    int cautious;  /* lion_cautious */
    int stalls;    /* expected to stall */
} run_config;

typedef struct {
    void *params[TENSORS];     /* float or uint16_t (bf16 bits) */
    float weights[TENSORS][CLASSES * HIDDEN]; /* the parameters widened to f32 */
    float grads[TENSORS][CLASSES * HIDDEN];
    float hidden[HIDDEN], logits[CLASSES], probs[CLASSES], delta_h[HIDDEN];
} model;

static void load(model *m, int bf16) {
    for (int t = 0; t < TENSORS; t++)
        for (size_t i = 0; i < LEN[t]; i++)
            m->weights[t][i] = bf16 ? bf16_to_f32(((uint16_t *)m->params[t])[i]) : ((float *)m->params[t])[i];
}

static void forward(model *m, const float x[2]) {
    for (int j = 0; j < HIDDEN; j++) {
        float z = m->weights[1][j] + (m->weights[0][2 * j] * x[0] + m->weights[0][2 * j + 1] * x[1]);
        m->hidden[j] = tanhf(z);
    }
    for (int k = 0; k < CLASSES; k++) {
        float z = 0.0f;
        for (int j = 0; j < HIDDEN; j++) z += m->weights[2][k * HIDDEN + j] * m->hidden[j];
        m->logits[k] = m->weights[3][k] + z;
    }
}

static float softmax_loss(model *m, int label) {
    float max = m->logits[0], sum = 0.0f;
    for (int k = 1; k < CLASSES; k++) max = m->logits[k] > max ? m->logits[k] : max;
    for (int k = 0; k < CLASSES; k++) sum += m->probs[k] = expf(m->logits[k] - max);
    for (int k = 0; k < CLASSES; k++) m->probs[k] /= sum;
    return -logf(m->probs[label] > 1e-30f ? m->probs[label] : 1e-30f);
}

/* The mean cross-entropy gradient over a batch into m->grads. */
static void gradients(model *m, int bf16, const size_t *batch, size_t n) {
    load(m, bf16);
    memset(m->grads, 0, sizeof m->grads);
    float scale = 1.0f / (float)n;
    for (size_t b = 0; b < n; b++) {
        const sample *s = &data[batch[b]];
        forward(m, s->x);
        softmax_loss(m, s->label);
        m->probs[s->label] -= 1.0f;
        for (int k = 0; k < CLASSES; k++) m->probs[k] *= scale; /* d loss / d logits */
        memset(m->delta_h, 0, sizeof m->delta_h);
        for (int k = 0; k < CLASSES; k++) {
            float d = m->probs[k];
            m->grads[3][k] += d;
            for (int j = 0; j < HIDDEN; j++) {
                m->grads[2][k * HIDDEN + j] += d * m->hidden[j];
                m->delta_h[j] += m->weights[2][k * HIDDEN + j] * d;
            }
        }
        for (int j = 0; j < HIDDEN; j++) {
            float d = m->delta_h[j] * (1.0f - m->hidden[j] * m->hidden[j]);
            m->grads[1][j] += d;
            m->grads[0][2 * j] += d * s->x[0];
            m->grads[0][2 * j + 1] += d * s->x[1];
        }
    }
}

typedef struct {
    float loss, accuracy;
} eval;

static eval evaluate(model *m, int bf16, size_t from, size_t count) {
    double loss = 0.0;
    size_t correct = 0;
    load(m, bf16);
    for (size_t i = from; i < from + count; i++) {
        forward(m, data[i].x);
        loss += softmax_loss(m, data[i].label);
        int best = 0;
        for (int k = 1; k < CLASSES; k++) best = m->logits[k] > m->logits[best] ? k : best;
        correct += best == data[i].label;
    }
    eval e = {(float)(loss / (double)count), (float)correct / (float)count};
    return e;
}

static double schedule(size_t step, size_t total) {
    double t = (double)step / (double)total;
    if (t < WARMUP) return (t + 1.0 / (double)total) / WARMUP;
    return 0.5 * (1.0 + cos(3.14159265358979323846 * (t - WARMUP) / (1.0 - WARMUP)));
}

/* Exits with the library's message if a call fails. */
static void ok(lion_status st, const char *what) {
    if (st < 0) {
        char msg[512];
        lion_last_error(msg, sizeof msg);
        fprintf(stderr, "%s failed: %s: %s\n", what, lion_status_name(st), msg);
        exit(1);
    }
}

typedef struct {
    eval initial, train, test;
    double seconds;
} report;

static report train_run(const run_config *cfg) {
    clock_t start = clock();
    model *m = (model *)calloc(1, sizeof(model));
    /* The same initial weights for every run: uniform Glorot weights, zero biases. */
    rng r = rng_new(SEED ^ 0x1417);
    for (int t = 0; t < TENSORS; t++) {
        m->params[t] = calloc(LEN[t], cfg->bf16 ? 2 : 4);
        if (t % 2 == 1) continue;
        size_t fan_in = t == 0 ? 2 : HIDDEN, fan_out = t == 0 ? HIDDEN : CLASSES;
        float limit = sqrtf(6.0f / (float)(fan_in + fan_out));
        for (size_t i = 0; i < LEN[t]; i++) {
            float w = limit * (2.0f * rng_uniform(&r) - 1.0f);
            if (cfg->bf16) ((uint16_t *)m->params[t])[i] = bf16_from_f32(w);
            else ((float *)m->params[t])[i] = w;
        }
    }

    /* Two groups: weight decay on the weights (group 0), none on the biases. */
    lion_hyperparams hp = lion_hyperparams_default();
    hp.lr = LR;
    hp.weight_decay = WEIGHT_DECAY;
    lion_step_options opts = lion_step_options_default();
    opts.rounding = cfg->rounding;
    opts.seed = 1;
    opts.cautious = cfg->cautious;
    lion_optimizer *opt = NULL;
    ok(lion_optimizer_create(&hp, &opts, &opt), "lion_optimizer_create");
    lion_hyperparams no_decay = hp;
    no_decay.weight_decay = 0.0;
    size_t bias_group, id[TENSORS];
    ok(lion_optimizer_add_group(opt, &no_decay, &opts, &bias_group), "lion_optimizer_add_group");
    int32_t dtype = cfg->bf16 ? LION_DTYPE_BF16 : LION_DTYPE_F32;
    for (int t = 0; t < TENSORS; t++) {
        lion_tensor_spec spec = lion_tensor_spec_default();
        spec.len = LEN[t];
        spec.name = NAME[t];
        spec.params_dtype = dtype;
        spec.momentum_dtype = dtype;
        spec.group = t % 2 == 1 ? bias_group : 0;
        ok(lion_optimizer_add_tensor(opt, &spec, &id[t]), "lion_optimizer_add_tensor");
    }

    report rep;
    rep.initial = evaluate(m, cfg->bf16, 0, n_train);
    size_t order[CLASSES * PER_CLASS];
    for (size_t i = 0; i < n_train; i++) order[i] = i;
    size_t steps_per_epoch = (n_train + BATCH - 1) / BATCH, total = EPOCHS * steps_per_epoch, step = 0;
    for (int epoch = 1; epoch <= EPOCHS; epoch++) {
        shuffle_idx(&r, order, n_train);
        for (size_t b = 0; b < n_train; b += BATCH) {
            size_t n = n_train - b < BATCH ? n_train - b : BATCH;
            ok(lion_optimizer_set_lr_scale(opt, schedule(step, total)), "lion_optimizer_set_lr_scale");
            gradients(m, cfg->bf16, order + b, n);
            lion_tensor_update ups[TENSORS];
            for (int t = 0; t < TENSORS; t++) {
                ups[t].tensor = id[t];
                ups[t].len = LEN[t];
                ups[t].params = m->params[t];
                ups[t].grads = m->grads[t];
                ups[t].params_dtype = dtype;
                ups[t].grads_dtype = LION_DTYPE_F32;
            }
            ok(lion_optimizer_step(opt, ups, TENSORS), "lion_optimizer_step");
            step++;
        }
        if (epoch % 20 == 0 || epoch == 1) {
            eval tr = evaluate(m, cfg->bf16, 0, n_train), te = evaluate(m, cfg->bf16, n_train, n_test);
            printf("  epoch %4d  lr %.2e  train loss %.4f  test loss %.4f  test acc %5.1f%%\n", epoch,
                   LR * schedule(step - 1, total), tr.loss, te.loss, 100.0 * te.accuracy);
        }
    }
    rep.train = evaluate(m, cfg->bf16, 0, n_train);
    rep.test = evaluate(m, cfg->bf16, n_train, n_test);
    rep.seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
    lion_optimizer_destroy(opt);
    for (int t = 0; t < TENSORS; t++) free(m->params[t]);
    free(m);
    return rep;
}

int main(void) {
    static const run_config runs[] = {
        {"f32", 0, LION_ROUNDING_NEAREST, LION_CAUTIOUS_OFF, 0},
        {"bf16", 1, LION_ROUNDING_NEAREST, LION_CAUTIOUS_OFF, 1},
        {"bf16 + SR", 1, LION_ROUNDING_STOCHASTIC, LION_CAUTIOUS_OFF, 0},
        {"f32 cautious", 0, LION_ROUNDING_NEAREST, LION_CAUTIOUS_WHOLE, 0},
    };
    enum { RUNS = sizeof runs / sizeof *runs };
    report reps[RUNS];
    make_spirals();
    printf("Three 2-D spirals: %zu train / %zu test points; MLP 2-%d-%d (tanh), batch %d, %d epochs, "
           "Lion lr %g (warm-up + cosine), weight decay %g; lion_optim %s on the %s backend.\n",
           n_train, n_test, HIDDEN, CLASSES, BATCH, EPOCHS, LR, WEIGHT_DECAY,
           lion_optim_version_string(), lion_backend_name());
    for (int i = 0; i < RUNS; i++) {
        printf("\n[%s] params %s, grads f32, momentum %s%s\n", runs[i].name, runs[i].bf16 ? "bf16" : "f32",
               runs[i].bf16 ? "bf16" : "f32", runs[i].stalls ? " (expected to stall: see the note)" : "");
        reps[i] = train_run(&runs[i]);
    }
    printf("\n%-12s %-6s %-5s %-8s %-10s %-8s %20s %10s %9s %8s %7s\n", "run", "params", "grads",
           "momentum", "rounding", "variant", "loss before training", "loss after", "train acc",
           "test acc", "time");
    int bad = 0;
    for (int i = 0; i < RUNS; i++) {
        const run_config *c = &runs[i];
        const report *r = &reps[i];
        printf("%-12s %-6s %-5s %-8s %-10s %-8s %20.3f %10.3f %8.1f%% %7.1f%% %5.2f s\n", c->name,
               c->bf16 ? "bf16" : "f32", "f32", c->bf16 ? "bf16" : "f32",
               c->rounding == LION_ROUNDING_STOCHASTIC ? "stochastic" : "nearest",
               c->cautious ? "cautious" : "plain", r->initial.loss, r->train.loss,
               100.0 * r->train.accuracy, 100.0 * r->test.accuracy, r->seconds);
        /* Every run learns; those that cannot lose updates solve the task; bf16 with
         * round-to-nearest stalls, as the note says. */
        if (!(r->train.loss < 0.5f * r->initial.loss)) bad++, fprintf(stderr, "%s: the loss did not fall\n", c->name);
        if (c->stalls ? !(r->test.accuracy < 0.9f) : !(r->test.accuracy > 0.95f))
            bad++, fprintf(stderr, "%s: test accuracy %.3f is not what the run should reach\n", c->name,
                           r->test.accuracy);
    }
    printf("\nNote: the bf16 run (round to nearest) is meant to stall: Lion moves each weight by lr, and "
           "a bf16 store rounds the move away when lr is under half the bf16 spacing at the weight; "
           "bf16 + SR rounds stochastically and keeps the moves on average.\n");
    printf("train: %d passed, %d failed\n", 2 * RUNS - bad, bad);
    return bad != 0;
}
