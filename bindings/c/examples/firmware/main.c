/* On-device training in C with lion_optim on a Cortex-M4F: bare metal, no heap, every buffer
 * static. Runs on QEMU's `-machine mps2-an386` and prints over semihosting.
 *
 * Three interleaved spirals (150 points each, generated here from a fixed seed, split 80/20)
 * are learned by a 2-32-32-3 ReLU network (forward and backward pass by hand, softmax
 * cross-entropy), mini-batches of 32, 60 epochs, a cosine learning-rate schedule from 5e-3
 * down to 5% of it. The optimizer is Lion through the stateless calls of lion_optim.h (the
 * library built for thumbv7em-none-eabihf without std or an allocator): two runs from the same
 * initial weights, f32 parameters and gradients with
 *   bf16 momentum    lion_step    (uint16_t buffers, LION_DTYPE_BF16), then
 *   8-bit momentum   lion_step_q8 (uint8_t codes starting at 127 plus one float absmax per
 *                                  started block of 256 elements).
 * Two parameter groups, each one contiguous span of the parameters (one call steps a group):
 * the weight matrices with weight decay 0.1, the biases without.
 *
 * Prints a markdown table, then "fw-c: PASS" and exits 0 if both runs reach 90% test
 * accuracy; otherwise "fw-c: FAIL" and exit status 1 (QEMU exits with the firmware's status).
 *
 *   make run LIB=path/to/liblion_optim.a     (builds and runs; see the Makefile:
 *   arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard -O2
 *     -nostartfiles --specs=nano.specs --specs=rdimon.specs -T mps2-an386.ld -u _printf_float
 *     main.c startup.c liblion_optim.a -lm -o firmware.elf)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lion_optim.h"

enum { POINTS = 150, ALL = 3 * POINTS, TRAIN = ALL * 4 / 5, TEST = ALL - TRAIN };
enum { IN = 2, H = 32, OUT = 3, EPOCHS = 60, BATCH = 32, REPORT_EVERY = 10 };
static const double LR = 5e-3, WEIGHT_DECAY = 0.1;
static const float MIN_ACCURACY = 0.90f, PI = 3.14159265f;

/* The parameters, flat: group 0 (the weight matrices, row-major [out][in]) then group 1 (the
 * biases). Gradients have the same layout, and so has the momentum of each run. */
enum { W1 = 0, W2 = W1 + H * IN, W3 = W2 + H * H, NW = W3 + OUT * H,
       B1 = NW, B2 = B1 + H, B3 = B2 + H, NP = B3 + OUT, NB = NP - NW };
static float param[NP], grad[NP];

/* lion_step_q8's blocks: one absmax per started block of LION_Q8_BLOCK (256) elements of a
 * call's buffers (counted from their start: a group's blocks may straddle two of its tensors). */
#define Q8_BLOCKS(n) (((n) + LION_Q8_BLOCK - 1) / LION_Q8_BLOCK)
static uint16_t momentum_bf16[NP];                     /* bf16 bits; 0 is zero momentum */
static uint8_t codes[NP];                              /* 8-bit momentum: 127 is zero... */
static float absmax[Q8_BLOCKS(NW) + Q8_BLOCKS(NB)];    /* ...with absmax 0 */

typedef struct { float x[IN]; int label; } sample;
static sample data[ALL]; /* data[0..TRAIN) trains, data[TRAIN..ALL) tests */

/* xorshift32, uniform in [0, 1), and a normal by Box-Muller. */
static uint32_t rng = 1;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static float uniform(void) { return (float)(next() >> 8) / 16777216.0f; }
static float normal(void) {
    float u1 = 1.0f - uniform(), u2 = uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(2 * PI * u2);
}
static uint32_t below(uint32_t n) { return next() % n; }

static void make_spirals(void) {
    rng = 0x5eed1234u;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < POINTS; i++) {
            float r = (float)i / POINTS, t = 7 * r + (float)c * 2 * PI / 3 + 0.2f * normal();
            data[c * POINTS + i] = (sample){{r * sinf(t), r * cosf(t)}, c};
        }
    for (int i = ALL - 1; i > 0; i--) { /* shuffle, so that the split takes from every class */
        int j = (int)below((uint32_t)i + 1);
        sample s = data[i]; data[i] = data[j]; data[j] = s;
    }
}

/* He initialisation (normal, variance 2 / fan_in), biases zero; the same in both runs. */
static void init_params(void) {
    rng = 0xfeedbeefu;
    for (int i = 0; i < NW; i++)
        param[i] = sqrtf(2.0f / (i < W2 ? IN : H)) * normal();
    memset(param + NW, 0, NB * sizeof param[0]);
}

/* y = W x + b, with ReLU if asked; W is n_out rows of n_in. */
static void layer(const float *w, const float *b, const float *x, int n_in, float *y, int n_out, int relu) {
    for (int j = 0; j < n_out; j++) {
        float s = b[j];
        for (int i = 0; i < n_in; i++) s += w[j * n_in + i] * x[i];
        y[j] = relu && s < 0 ? 0 : s;
    }
}

/* Back through y = W x + b from dy: adds dy x^T into dw and dy into db; if dx is not NULL,
 * dx = W^T dy through the ReLU that produced x (zero where x is 0). */
static void layer_back(const float *w, const float *x, int n_in, const float *dy, int n_out,
                       float *dw, float *db, float *dx) {
    for (int i = 0; dx && i < n_in; i++) dx[i] = 0;
    for (int j = 0; j < n_out; j++) {
        db[j] += dy[j];
        for (int i = 0; i < n_in; i++) {
            dw[j * n_in + i] += dy[j] * x[i];
            if (dx) dx[i] += dy[j] * w[j * n_in + i];
        }
    }
    for (int i = 0; dx && i < n_in; i++) if (x[i] <= 0) dx[i] = 0;
}

typedef struct { float h1[H], h2[H], p[OUT]; } activations;

/* The forward pass of one point: fills a (p: the softmax), returns the loss -ln p[label]. */
static float forward(const float *x, int label, activations *a) {
    float z[OUT], sum = 0;
    layer(param + W1, param + B1, x, IN, a->h1, H, 1);
    layer(param + W2, param + B2, a->h1, H, a->h2, H, 1);
    layer(param + W3, param + B3, a->h2, H, z, OUT, 0);
    float max = fmaxf(fmaxf(z[0], z[1]), z[2]);
    for (int k = 0; k < OUT; k++) sum += a->p[k] = expf(z[k] - max);
    for (int k = 0; k < OUT; k++) a->p[k] /= sum;
    return -logf(fmaxf(a->p[label], 1e-30f));
}

/* The backward pass of one point (after forward): adds scale * its gradient into grad. */
static void backward(const float *x, int label, const activations *a, float scale) {
    float d3[OUT], d2[H], d1[H];
    for (int k = 0; k < OUT; k++) d3[k] = (a->p[k] - (k == label)) * scale;
    layer_back(param + W3, a->h2, H, d3, OUT, grad + W3, grad + B3, d2);
    layer_back(param + W2, a->h1, H, d2, H, grad + W2, grad + B2, d1);
    layer_back(param + W1, x, IN, d1, H, grad + W1, grad + B1, NULL);
}

static int predict(const float *x) {
    activations a;
    forward(x, 0, &a);
    int best = 0;
    for (int k = 1; k < OUT; k++) if (a.p[k] > a.p[best]) best = k;
    return best;
}

/* Every lion_optim call returns a status: anything but LION_STATUS_OK ends the program. */
static void check(lion_status status, const char *call) {
    if (status == LION_STATUS_OK) return;
    char message[200];
    lion_last_error(message, sizeof message);
    printf("fw-c: %s returned %s: %s\nfw-c: FAIL\n", call, lion_status_name(status), message);
    exit(2);
}

enum momentum { BF16, Q8 };

/* One Lion step of one parameter group: param[first..first+len) with its gradient. */
static void lion(enum momentum m, int first, int len, int block, const lion_hyperparams *hp) {
    if (m == BF16)
        check(lion_step(param + first, LION_DTYPE_F32, grad + first, LION_DTYPE_F32,
                        momentum_bf16 + first, LION_DTYPE_BF16, (size_t)len, hp, NULL), "lion_step");
    else
        check(lion_step_q8(param + first, LION_DTYPE_F32, grad + first, LION_DTYPE_F32,
                           codes + first, absmax + block, (size_t)len, hp, NULL), "lion_step_q8");
}

/* Trains from the initial weights with this momentum; returns the final test accuracy. */
static float train(enum momentum m, const char *name) {
    static uint16_t order[TRAIN];
    lion_hyperparams weights = lion_hyperparams_default(), biases = lion_hyperparams_default();
    weights.weight_decay = WEIGHT_DECAY; /* biases: 0; betas: the defaults, 0.9 and 0.99 */
    const int total_steps = EPOCHS * ((TRAIN + BATCH - 1) / BATCH);
    int step = 0, correct = 0;
    init_params();
    for (int i = 0; i < TRAIN; i++) order[i] = (uint16_t)i;
    for (int epoch = 1; epoch <= EPOCHS; epoch++) {
        float loss = 0;
        for (int i = TRAIN - 1; i > 0; i--) {
            int j = (int)below((uint32_t)i + 1);
            uint16_t t = order[i]; order[i] = order[j]; order[j] = t;
        }
        for (int first = 0; first < TRAIN; first += BATCH) {
            int n = TRAIN - first < BATCH ? TRAIN - first : BATCH;
            memset(grad, 0, sizeof grad); /* the batch's mean gradient */
            for (int i = first; i < first + n; i++) {
                const sample *s = &data[order[i]];
                activations a;
                loss += forward(s->x, s->label, &a);
                backward(s->x, s->label, &a, 1.0f / (float)n);
            }
            /* Cosine schedule from LR down to 5% of it, over every step of the run. */
            float scale = 0.05f + 0.95f * 0.5f * (1 + cosf(PI * (float)step++ / total_steps));
            weights.lr = biases.lr = LR * scale;
            lion(m, W1, NW, 0, &weights);
            lion(m, B1, NB, Q8_BLOCKS(NW), &biases);
        }
        correct = 0;
        for (int i = TRAIN; i < ALL; i++) correct += predict(data[i].x) == data[i].label;
        if (epoch == 1 || epoch % REPORT_EVERY == 0)
            printf("| %s | %d | %.3f | %.1f%% |\n", name, epoch, (double)(loss / TRAIN),
                   100.0 * correct / TEST);
    }
    return (float)correct / TEST;
}

/* The footprint of one step: the stack each stateless call needs (startup.c measures it). */
size_t stack_used_by(void (*fn)(void));
static lion_status probe_status;
static void probe_bf16(void) {
    lion_hyperparams hp = lion_hyperparams_default();
    probe_status |= lion_step(param, LION_DTYPE_F32, grad, LION_DTYPE_F32, momentum_bf16,
                              LION_DTYPE_BF16, NW, &hp, NULL);
}
static void probe_q8(void) {
    lion_hyperparams hp = lion_hyperparams_default();
    probe_status |= lion_step_q8(param, LION_DTYPE_F32, grad, LION_DTYPE_F32, codes, absmax, NW,
                                 &hp, NULL);
}

int main(void) {
    printf("fw-c: lion_optim %s (%s), three spirals: %d training and %d test points, "
           "MLP %d-%d-%d-%d (%d parameters), %d epochs, batch %d\n\n",
           lion_optim_version_string(), lion_backend_name(), TRAIN, TEST, IN, H, H, OUT, NP,
           EPOCHS, BATCH);
    make_spirals();
    printf("| momentum | epoch | train loss | test accuracy |\n|---|---:|---:|---:|\n");
    float acc_bf16 = train(BF16, "bf16");
    memset(codes, 127, sizeof codes); /* 8-bit zero momentum: code 127, absmax 0 */
    float acc_q8 = train(Q8, "8-bit");
    printf("\nfw-c: momentum bytes: bf16 %u, 8-bit %u (codes %u + absmax %u); f32 would be %u\n",
           (unsigned)sizeof momentum_bf16, (unsigned)(sizeof codes + sizeof absmax),
           (unsigned)sizeof codes, (unsigned)sizeof absmax, (unsigned)(NP * sizeof(float)));
    size_t stack_bf16 = stack_used_by(probe_bf16), stack_q8 = stack_used_by(probe_q8);
    check(probe_status, "a probed step");
    printf("fw-c: stack of one step (%d elements): lion_step (f32, f32, bf16) %u bytes, "
           "lion_step_q8 %u bytes\n", NW, (unsigned)stack_bf16, (unsigned)stack_q8);
    int pass = acc_bf16 >= MIN_ACCURACY && acc_q8 >= MIN_ACCURACY;
    printf("fw-c: test accuracy bf16 %.1f%%, 8-bit %.1f%% (required %.0f%%)\nfw-c: %s\n",
           100.0 * acc_bf16, 100.0 * acc_q8, 100.0 * MIN_ACCURACY, pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
}
