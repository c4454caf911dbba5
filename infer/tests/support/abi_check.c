/*
 * abi_check.c: checks rccr_infer.h against the built library (infer/tests/c_abi.rs).
 *
 *   abi_check layout        prints sizeof / offsetof of RccrOptions and every constant,
 *                           for the test to compare with the Rust definitions;
 *   abi_check MODEL.onnx    calls every entry point, the error cases included (NULLs, bad
 *                           sizes, closed handles), and runs one handle from 4 threads;
 *                           prints "ALL OK" when every check holds.
 *
 * MODEL is the tests' nearest-palette-colour model with `labels` and `logits`: an image
 * painted in palette colours is labelled with exactly the ids it was painted with.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rccr_infer.h"

#define W 32
#define H 16
#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "abi_check:%d: check failed: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, " (last error: %s)\n", rccr_last_error()); \
            exit(1);                                                  \
        }                                                             \
    } while (0)

static const uint8_t PALETTE[19][3] = {
    {128, 64, 128}, {244, 35, 232}, {70, 70, 70},   {102, 102, 156}, {190, 153, 153},
    {153, 153, 153}, {250, 170, 30}, {220, 220, 0}, {107, 142, 35},  {152, 251, 152},
    {70, 130, 180}, {220, 20, 60},  {255, 0, 0},    {0, 0, 142},     {0, 0, 70},
    {0, 60, 100},   {0, 80, 100},   {0, 0, 230},    {119, 11, 32}};

static uint8_t rgb[2 * W * H * 3], expected[2 * W * H];

/* Two images of 4-pixel vertical stripes cycling through the 19 classes. */
static void paint(void) {
    for (int i = 0; i < 2; i++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int p = (i * H + y) * W + x, id = (x / 4 + 5 * i + y / 8) % 19;
                expected[p] = (uint8_t)id;
                memcpy(rgb + 3 * p, PALETTE[id], 3);
            }
}

static int layout(void) {
    printf("sizeof %zu\n", sizeof(RccrOptions));
#define OFF(f) printf("offset.%s %zu\n", #f, offsetof(RccrOptions, f))
    OFF(struct_size); OFF(provider); OFF(threads); OFF(input_width); OFF(input_height);
    OFF(batch_size); OFF(device_id); OFF(trt_fp16); OFF(trt_cache_dir);
#define K(c) printf("%s %lld\n", #c, (long long)(c))
    K(RCCR_OK); K(RCCR_ERR_INVALID_ARGUMENT); K(RCCR_ERR_BAD_HANDLE); K(RCCR_ERR_IO);
    K(RCCR_ERR_MODEL); K(RCCR_ERR_PROVIDER); K(RCCR_ERR_RUNTIME); K(RCCR_ERR_INFERENCE);
    K(RCCR_ERR_INTERNAL); K(RCCR_PROVIDER_AUTO); K(RCCR_PROVIDER_CPU); K(RCCR_PROVIDER_CUDA);
    K(RCCR_PROVIDER_TENSORRT); K(RCCR_MAX_IMAGE_SIDE); K(RCCR_MAX_IMAGE_PIXELS);
    return 0;
}

static RccrSegmenter *shared;

static void *worker(void *arg) {
    (void)arg;
    uint8_t out[2 * W * H];
    /* A fresh thread has no last error. */
    if (rccr_last_error()[0] != '\0') return "last error leaked across threads";
    for (int k = 0; k < 3; k++) {
        memset(out, 77, sizeof out);
        if (rccr_segmenter_run(shared, rgb, 2, H, W, out) != RCCR_OK) return "run failed";
        if (memcmp(out, expected, sizeof out) != 0) return "wrong ids under concurrency";
    }
    return NULL;
}

static void check_errors_before_open(const char *model) {
    RccrSegmenter *s = (RccrSegmenter *)1;
    CHECK(rccr_segmenter_open(NULL, NULL, &s) == RCCR_ERR_INVALID_ARGUMENT && s == NULL,
          "NULL model path");
    CHECK(strstr(rccr_last_error(), "model_path") != NULL, "message names model_path");
    CHECK(rccr_segmenter_open(model, NULL, NULL) == RCCR_ERR_INVALID_ARGUMENT, "NULL out");
    CHECK(rccr_segmenter_open("/nonexistent/m.onnx", NULL, &s) == RCCR_ERR_IO, "missing file");
    CHECK(strstr(rccr_last_error(), "/nonexistent/m.onnx") != NULL, "message names the file");
    RccrOptions zero;
    memset(&zero, 0, sizeof zero);
    CHECK(rccr_segmenter_open(model, &zero, &s) == RCCR_ERR_INVALID_ARGUMENT, "struct_size 0");
    RccrOptions o = rccr_options_default();
    o.provider = 42;
    CHECK(rccr_segmenter_open(model, &o, &s) == RCCR_ERR_INVALID_ARGUMENT, "bad provider");
    o = rccr_options_default();
    o.input_width = 100000;
    o.input_height = 100000;
    CHECK(rccr_segmenter_open(model, &o, &s) == RCCR_ERR_INVALID_ARGUMENT, "huge input size");
}

static void check_queries(RccrSegmenter *s) {
    int32_t n = 0, w = 0, h = 0, b = 0;
    const char *name = NULL, *provider = NULL;
    uint8_t pal[19 * 3];
    CHECK(rccr_segmenter_num_classes(NULL, &n) == RCCR_ERR_INVALID_ARGUMENT, "NULL handle");
    CHECK(rccr_segmenter_num_classes(s, NULL) == RCCR_ERR_INVALID_ARGUMENT, "NULL out");
    CHECK(rccr_segmenter_num_classes(s, &n) == RCCR_OK && n == 19, "19 classes, got %d", n);
    CHECK(rccr_segmenter_class_name(s, 19, &name) == RCCR_ERR_INVALID_ARGUMENT, "class 19");
    CHECK(rccr_segmenter_class_name(s, -1, &name) == RCCR_ERR_INVALID_ARGUMENT, "class -1");
    CHECK(rccr_segmenter_class_name(s, 18, &name) == RCCR_OK && strcmp(name, "bicycle") == 0,
          "class 18 is bicycle");
    CHECK(rccr_segmenter_palette(s, pal, 56) == RCCR_ERR_INVALID_ARGUMENT, "small palette");
    CHECK(rccr_segmenter_palette(s, NULL, 57) == RCCR_ERR_INVALID_ARGUMENT, "NULL palette");
    CHECK(rccr_segmenter_palette(s, pal, 57) == RCCR_OK && memcmp(pal, PALETTE, 57) == 0,
          "palette");
    CHECK(rccr_segmenter_input_size(s, &w, &h) == RCCR_OK && w == W && h == H, "input size");
    CHECK(rccr_segmenter_input_size(s, &w, NULL) == RCCR_ERR_INVALID_ARGUMENT, "NULL height");
    CHECK(rccr_segmenter_batch_size(s, &b) == RCCR_OK && b == 2, "batch size %d", b);
    CHECK(rccr_segmenter_provider(s, &provider) == RCCR_OK && strcmp(provider, "cpu") == 0,
          "provider");
    CHECK(strstr(rccr_version(), "ONNX Runtime") != NULL, "version");
}

static void check_runs(RccrSegmenter *s) {
    static uint8_t out[2 * W * H];
    static float logits[2 * 19 * W * H];
    CHECK(rccr_segmenter_run(s, NULL, 2, H, W, out) == RCCR_ERR_INVALID_ARGUMENT, "NULL rgb");
    CHECK(rccr_segmenter_run(s, rgb, 2, H, W, NULL) == RCCR_ERR_INVALID_ARGUMENT, "NULL ids");
    CHECK(rccr_segmenter_run(s, rgb, 0, H, W, out) == RCCR_ERR_INVALID_ARGUMENT, "n = 0");
    CHECK(rccr_segmenter_run(s, rgb, 1, -H, W, out) == RCCR_ERR_INVALID_ARGUMENT, "height < 0");
    CHECK(rccr_segmenter_run(s, rgb, 1, 40000, 40000, out) == RCCR_ERR_INVALID_ARGUMENT,
          "over the image limits");
    CHECK(strstr(rccr_last_error(), "40000x40000") != NULL, "message names the size");
    /* Three images: one batch of 2, then a batch of 1 (the first image again). */
    static uint8_t rgb3[3 * W * H * 3], out3[3 * W * H];
    memcpy(rgb3, rgb, sizeof rgb);
    memcpy(rgb3 + sizeof rgb, rgb, W * H * 3);
    CHECK(rccr_segmenter_run(s, rgb3, 3, H, W, out3) == RCCR_OK, "run of 3");
    CHECK(memcmp(out3, expected, sizeof expected) == 0 &&
              memcmp(out3 + 2 * W * H, expected, W * H) == 0,
          "ids of 3 images");
    memset(out, 0, sizeof out);
    CHECK(rccr_segmenter_run_logits(s, rgb, 2, H, W, out, NULL) == RCCR_ERR_INVALID_ARGUMENT,
          "NULL logits");
    CHECK(rccr_segmenter_run_logits(s, rgb, 2, H, W, out, logits) == RCCR_OK, "run_logits");
    CHECK(memcmp(out, expected, sizeof out) == 0, "ids with logits");
    for (int i = 0; i < 2; i++)
        for (int p = 0; p < W * H; p++) {
            int best = 0;
            for (int c = 1; c < 19; c++)
                if (logits[(i * 19 + c) * W * H + p] > logits[(i * 19 + best) * W * H + p]) best = c;
            CHECK(best == expected[i * W * H + p], "argmax of logits at image %d pixel %d", i, p);
        }
}

static void check_threads(RccrSegmenter *s) {
    shared = s;
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, worker, NULL) == 0, "thread");
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        CHECK(r == NULL, "thread %d: %s", i, (const char *)r);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "layout") == 0) return layout();
    CHECK(argc == 2, "usage: abi_check layout | abi_check MODEL.onnx");
    paint();
    check_errors_before_open(argv[1]);
    RccrOptions o = rccr_options_default();
    o.provider = RCCR_PROVIDER_CPU;
    o.input_width = W;
    o.input_height = H;
    o.batch_size = 2;
    o.threads = 1;
    RccrSegmenter *s = NULL;
    CHECK(rccr_segmenter_open(argv[1], &o, &s) == RCCR_OK && s != NULL, "open");
    check_queries(s);
    check_runs(s);
    check_threads(s);
    rccr_segmenter_close(s);
    int32_t n = 0;
    uint8_t out[W * H];
    CHECK(rccr_segmenter_num_classes(s, &n) == RCCR_ERR_BAD_HANDLE, "closed handle query");
    CHECK(strstr(rccr_last_error(), "not an open segmenter") != NULL, "closed message");
    CHECK(rccr_segmenter_run(s, rgb, 1, H, W, out) == RCCR_ERR_BAD_HANDLE, "closed handle run");
    rccr_segmenter_close(s); /* twice: no crash */
    rccr_segmenter_close(NULL);
    printf("ALL OK\n");
    return 0;
}
