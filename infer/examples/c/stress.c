/*
 * stress.c: the thread-safety contract of rccr_infer.h exercised from many threads, for
 * scripts/sanitize.sh (AddressSanitizer, ThreadSanitizer) and scripts/soak.sh
 * (docs/hardening.md).
 *
 *   stress MODEL.onnx [HANDLES] [THREADS_PER_HANDLE] [ITERATIONS]
 *
 * MODEL is the nearest-colour test model of infer/tests/support/make_model.py: an image
 * painted in palette colour k is labelled k everywhere, which every run checks. At once:
 *   - HANDLES shared handles, each run by THREADS_PER_HANDLE threads (runs of one handle
 *     are serialised inside it), with the query functions called between runs;
 *   - bad arguments mixed in (NULL buffers, zero, negative and oversized sizes, a NULL
 *     and a closed handle): each must fail with its documented code and a message;
 *   - a churn thread opening, running and closing its own handles over and over;
 *   - one handle closed by the main thread while its runners are still running: runs in
 *     flight complete, later ones fail with RCCR_ERR_BAD_HANDLE.
 * Exits 0 when every check held, 1 otherwise (the first failures are printed).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rccr_infer.h"

static const char *model_path;
static int iterations = 20;
static atomic_int failures;
static atomic_int runs_ok;
static atomic_int bad_calls;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            if (atomic_fetch_add(&failures, 1) < 20) {                                     \
                fprintf(stderr, "stress: check failed (%s:%d): ", __FILE__, __LINE__);     \
                fprintf(stderr, __VA_ARGS__);                                              \
                fprintf(stderr, " [last error: %s]\n", rccr_last_error());                \
            }                                                                              \
        }                                                                                  \
    } while (0)

typedef struct {
    RccrSegmenter *seg;
    unsigned seed;
    int may_be_closed; /* the main thread closes this handle while we run */
} Runner;

/* A small xorshift generator per thread (rand() is not thread-safe). */
static unsigned next(unsigned *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static RccrSegmenter *open_model(void) {
    RccrOptions o = rccr_options_default();
    o.provider = RCCR_PROVIDER_CPU;
    o.threads = 1;
    o.input_width = 32;
    o.input_height = 16;
    RccrSegmenter *seg = NULL;
    int st = rccr_segmenter_open(model_path, &o, &seg);
    CHECK(st == RCCR_OK && seg != NULL, "open %s: status %d", model_path, st);
    return st == RCCR_OK ? seg : NULL;
}

/* One run of an image filled with palette colour `k`; every id must be k. Returns the
 * status. */
static int run_uniform(RccrSegmenter *seg, unsigned *rng, int *k_out) {
    uint8_t palette[3 * 256];
    int32_t classes = 0;
    int st = rccr_segmenter_num_classes(seg, &classes);
    if (st != RCCR_OK)
        return st;
    st = rccr_segmenter_palette(seg, palette, (int32_t)sizeof palette);
    if (st != RCCR_OK)
        return st;
    int k = (int)(next(rng) % (unsigned)classes);
    int32_t w = 1 + (int32_t)(next(rng) % 48), h = 1 + (int32_t)(next(rng) % 40);
    int32_t n = 1 + (int32_t)(next(rng) % 3);
    size_t px = (size_t)n * (size_t)w * (size_t)h;
    uint8_t *rgb = malloc(px * 3), *ids = malloc(px);
    for (size_t i = 0; i < px; i++)
        memcpy(rgb + 3 * i, palette + 3 * k, 3);
    memset(ids, 0xAA, px);
    st = rccr_segmenter_run(seg, rgb, n, h, w, ids);
    if (st == RCCR_OK) {
        size_t wrong = 0;
        for (size_t i = 0; i < px; i++)
            wrong += ids[i] != k;
        CHECK(wrong == 0, "%zu of %zu ids differ from class %d (%dx%dx%d)", wrong, px, k, n, h, w);
        atomic_fetch_add(&runs_ok, 1);
    }
    free(rgb);
    free(ids);
    *k_out = k;
    return st;
}

/* The documented failures: each bad call must return its code and set a message. */
static void bad_arguments(RccrSegmenter *seg, int may_be_closed) {
    uint8_t rgb[12] = {0}, ids[4];
    int32_t v = 0;
    const char *s = NULL;
    int st;
#define EXPECT(call, code)                                                                  \
    do {                                                                                   \
        st = (call);                                                                       \
        int ok = st == (code) || (may_be_closed && st == RCCR_ERR_BAD_HANDLE);             \
        CHECK(ok, "%s returned %d, expected %d", #call, st, code);                         \
        CHECK(rccr_last_error()[0] != '\0', "%s left no message", #call);                  \
        atomic_fetch_add(&bad_calls, 1);                                                   \
    } while (0)
    EXPECT(rccr_segmenter_run(seg, NULL, 1, 2, 2, ids), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_run(seg, rgb, 1, 2, 2, NULL), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_run(seg, rgb, 0, 2, 2, ids), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_run(seg, rgb, 1, -2, 2, ids), RCCR_ERR_INVALID_ARGUMENT);
    /* Over the side limit, with buffers of the sizes passed (the caller's contract). */
    uint8_t *wide_rgb = calloc(3 * (size_t)(RCCR_MAX_IMAGE_SIDE + 1), 1);
    uint8_t *wide_ids = malloc((size_t)RCCR_MAX_IMAGE_SIDE + 1);
    EXPECT(rccr_segmenter_run(seg, wide_rgb, 1, 1, RCCR_MAX_IMAGE_SIDE + 1, wide_ids),
           RCCR_ERR_INVALID_ARGUMENT);
    free(wide_rgb);
    free(wide_ids);
    EXPECT(rccr_segmenter_num_classes(seg, NULL), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_class_name(seg, -1, &s), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_class_name(seg, 100000, &s), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_palette(seg, rgb, 3), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_input_size(seg, NULL, &v), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_run(NULL, rgb, 1, 2, 2, ids), RCCR_ERR_INVALID_ARGUMENT);
    EXPECT(rccr_segmenter_num_classes((RccrSegmenter *)(uintptr_t)0xdead, &v),
           RCCR_ERR_BAD_HANDLE);
    rccr_segmenter_close((RccrSegmenter *)(uintptr_t)0xdead); /* no effect */
#undef EXPECT
}

static void *runner(void *arg) {
    Runner *r = arg;
    for (int i = 0; i < iterations; i++) {
        int k = 0;
        int st = run_uniform(r->seg, &r->seed, &k);
        if (st == RCCR_ERR_BAD_HANDLE && r->may_be_closed)
            break; /* closed by the main thread: the contract's answer */
        CHECK(st == RCCR_OK, "run: status %d", st);
        if (i % 4 == 0)
            bad_arguments(r->seg, r->may_be_closed);
        const char *provider = NULL;
        st = rccr_segmenter_provider(r->seg, &provider);
        CHECK(st == RCCR_OK || r->may_be_closed, "provider: status %d", st);
        int32_t w = 0, h = 0;
        st = rccr_segmenter_input_size(r->seg, &w, &h);
        CHECK(st != RCCR_OK || (w == 32 && h == 16), "input size %dx%d", w, h);
    }
    return NULL;
}

/* Opens, runs and closes a fresh handle again and again; runs on the closed handle. */
static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < iterations / 4 + 1; i++) {
        RccrSegmenter *seg = open_model();
        if (!seg)
            return NULL;
        int k = 0;
        CHECK(run_uniform(seg, &seed, &k) == RCCR_OK, "churn run");
        rccr_segmenter_close(seg);
        int32_t v = 0;
        CHECK(rccr_segmenter_num_classes(seg, &v) == RCCR_ERR_BAD_HANDLE, "closed handle used");
        CHECK(run_uniform(seg, &seed, &k) == RCCR_ERR_BAD_HANDLE, "run on a closed handle");
    }
    RccrSegmenter *bad = NULL;
    int st = rccr_segmenter_open("/nonexistent/model.onnx", NULL, &bad);
    CHECK(st == RCCR_ERR_IO && bad == NULL, "open of a missing file: status %d", st);
    st = rccr_segmenter_open(NULL, NULL, &bad);
    CHECK(st == RCCR_ERR_INVALID_ARGUMENT, "open(NULL): status %d", st);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stress MODEL.onnx [HANDLES] [THREADS_PER_HANDLE] [ITERATIONS]\n");
        return 2;
    }
    model_path = argv[1];
    int handles = argc > 2 ? atoi(argv[2]) : 3;
    int per = argc > 3 ? atoi(argv[3]) : 3;
    iterations = argc > 4 ? atoi(argv[4]) : 20;
    if (handles < 1 || per < 1 || iterations < 1 || handles > 64 || per > 64) {
        fprintf(stderr, "stress: HANDLES and THREADS_PER_HANDLE in 1..64, ITERATIONS >= 1\n");
        return 2;
    }
    /* The last handle is the victim closed while in use. */
    int total = handles * per;
    RccrSegmenter **segs = calloc((size_t)handles, sizeof *segs);
    Runner *runners = calloc((size_t)total, sizeof *runners);
    pthread_t *threads = calloc((size_t)total + 2, sizeof *threads);
    for (int h = 0; h < handles; h++)
        if (!(segs[h] = open_model()))
            return 1;
    for (int t = 0; t < total; t++) {
        runners[t] = (Runner){segs[t / per], 0x9e3779b9u * (unsigned)(t + 1), t / per == handles - 1};
        pthread_create(&threads[t], NULL, runner, &runners[t]);
    }
    pthread_create(&threads[total], NULL, churn, (void *)(uintptr_t)12345);
    pthread_create(&threads[total + 1], NULL, churn, (void *)(uintptr_t)777);
    /* Close the victim while its runners run (after its first successful runs). */
    while (atomic_load(&runs_ok) < per && atomic_load(&failures) == 0) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    rccr_segmenter_close(segs[handles - 1]);
    for (int t = 0; t < total + 2; t++)
        pthread_join(threads[t], NULL);
    for (int h = 0; h < handles - 1; h++)
        rccr_segmenter_close(segs[h]);
    rccr_segmenter_close(NULL);
    printf("stress: %d handles x %d threads x %d iterations + 2 churn threads: %d runs checked, "
           "%d bad calls refused, %d failed checks\n",
           handles, per, iterations, atomic_load(&runs_ok), atomic_load(&bad_calls),
           atomic_load(&failures));
    free(segs);
    free(runners);
    free(threads);
    return atomic_load(&failures) == 0 ? 0 : 1;
}
