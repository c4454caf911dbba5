/*
 * rccr_infer.h: the C ABI of rccr-infer (librccr_infer.so / librccr_infer.a).
 *
 * Semantic segmentation with an rccr ONNX model (made by `rccr-export`) on ONNX Runtime:
 * open a model, query its classes, segment RGB8 frames into caller-owned train-id
 * buffers, close. The output of rccr_segmenter_run is exactly what `rccr-infer --out`
 * writes to trainIds/ for the same image (resize to the model input, model, argmax,
 * nearest resize back to the image's own size).
 *
 * Status codes: every function returning int returns RCCR_OK (0) on success and a
 * positive RCCR_ERR_* code on failure; rccr_last_error() then gives the message of the
 * calling thread's last failure (it is not cleared by later successes). No Rust panic
 * crosses this boundary: an internal error is reported as RCCR_ERR_INTERNAL. NULL
 * pointers, non-positive or oversized dimensions and closed or unknown handles are
 * errors, not crashes (a buffer smaller than the sizes passed cannot be detected).
 *
 * Thread safety: a handle may be shared by threads. Runs on one handle are serialised
 * by a lock inside the handle (one model run at a time per handle; open one handle per
 * thread to run in parallel); the query functions never wait for a run. Closing a handle
 * while another thread's run on it is in flight is allowed: that run completes, then the
 * model is freed. rccr_last_error() is per thread.
 *
 * ONNX Runtime (libonnxruntime.so.1.31.1) is loaded at the first open, from
 * ORT_DYLIB_PATH if set, else the folder `make setup` installed it to, else the folder
 * of librccr_infer.so, else the executable's folder, else ../lib beside the executable.
 *
 * Build: see infer/examples/c/Makefile and CMakeLists.txt; after `make install`,
 * `cc app.c $(pkg-config --cflags --libs rccr_infer)` (docs/deployment.md).
 */
#ifndef RCCR_INFER_H
#define RCCR_INFER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define RCCR_OK 0
#define RCCR_ERR_INVALID_ARGUMENT 1 /* a NULL pointer, a bad size or option */
#define RCCR_ERR_BAD_HANDLE 2       /* closed, or not returned by rccr_segmenter_open */
#define RCCR_ERR_IO 3               /* the model file cannot be read */
#define RCCR_ERR_MODEL 4            /* not an rccr ONNX model, or ONNX Runtime refused it */
#define RCCR_ERR_PROVIDER 5         /* the requested CUDA / TensorRT provider is unavailable */
#define RCCR_ERR_RUNTIME 6          /* libonnxruntime could not be found or loaded */
#define RCCR_ERR_INFERENCE 7        /* ONNX Runtime failed while running the model */
#define RCCR_ERR_INTERNAL 8         /* an internal error (caught panic): please report it */

/* Execution providers (RccrOptions.provider). */
#define RCCR_PROVIDER_AUTO 0     /* TensorRT, then CUDA, then CPU: the first that works */
#define RCCR_PROVIDER_CPU 1
#define RCCR_PROVIDER_CUDA 2     /* needs onnxruntime-gpu, CUDA and cuDNN 9 */
#define RCCR_PROVIDER_TENSORRT 3 /* needs onnxruntime-gpu and TensorRT 10 */

/* Limits of rccr_segmenter_run's image size. */
#define RCCR_MAX_IMAGE_SIDE 32768
#define RCCR_MAX_IMAGE_PIXELS 268435456 /* 2^28 */

/* An open model. Opaque: handles are ids, never dereference or free them yourself. */
typedef struct RccrSegmenter RccrSegmenter;

/* Options of rccr_segmenter_open. Start from rccr_options_default(), then change fields. */
typedef struct RccrOptions {
    uint32_t struct_size;      /* sizeof(RccrOptions); set by rccr_options_default() */
    int32_t provider;          /* RCCR_PROVIDER_*; default AUTO */
    int32_t threads;           /* ONNX Runtime intra-op threads; 0 (default) = physical cores */
    int32_t input_width;       /* model input width; 0 with input_height 0 (default) = */
    int32_t input_height;      /*   the model's fixed size, else 1024x512 */
    int32_t batch_size;        /* images per model run, 1..256; 0 = 1; default 1 */
    int32_t device_id;         /* GPU index for CUDA / TensorRT; default 0 */
    int32_t trt_fp16;          /* non-zero: TensorRT may use fp16 kernels; default 0 */
    const char *trt_cache_dir; /* TensorRT engine cache; NULL (default) = trt-cache/ next to the model */
} RccrOptions;

/* Default options (struct_size set). */
RccrOptions rccr_options_default(void);

/* Opens the ONNX model at model_path with options (NULL = defaults) into *out (NULL on
 * failure). Loads ONNX Runtime on first use. */
int rccr_segmenter_open(const char *model_path, const RccrOptions *options, RccrSegmenter **out);

/* Number of classes the model predicts (19 for Cityscapes). */
int rccr_segmenter_num_classes(const RccrSegmenter *s, int32_t *out);

/* Name of class class_id (0 <= class_id < num_classes); the string lives until close. */
int rccr_segmenter_class_name(const RccrSegmenter *s, int32_t class_id, const char **out);

/* Colours of all classes, RGB, 3 * num_classes bytes into rgb (capacity >= that). */
int rccr_segmenter_palette(const RccrSegmenter *s, uint8_t *rgb, int32_t capacity);

/* The model input size images are resized to. */
int rccr_segmenter_input_size(const RccrSegmenter *s, int32_t *width, int32_t *height);

/* Images per model run (larger n are run in batches of this size). */
int rccr_segmenter_batch_size(const RccrSegmenter *s, int32_t *out);

/* The execution provider that runs the model: "cpu", "cuda" or "tensorrt" (static). */
int rccr_segmenter_provider(const RccrSegmenter *s, const char **out);

/* Segments n images of height x width: rgb holds n * height * width * 3 bytes (RGB8
 * interleaved, row-major, images back to back); train_ids receives n * height * width
 * class ids at the images' own size (255 = none). On failure train_ids is unspecified. */
int rccr_segmenter_run(RccrSegmenter *s, const uint8_t *rgb, int32_t n, int32_t height,
                       int32_t width, uint8_t *train_ids);

/* rccr_segmenter_run, also writing the logits: n * C * H * W floats at the model input
 * size (rccr_segmenter_input_size), class-major per image. Needs a model exported with
 * the `logits` output (RCCR_ERR_INVALID_ARGUMENT otherwise). */
int rccr_segmenter_run_logits(RccrSegmenter *s, const uint8_t *rgb, int32_t n, int32_t height,
                              int32_t width, uint8_t *train_ids, float *logits);

/* Closes s and frees its model. NULL: nothing happens. A closed or unknown handle: no
 * effect other than setting rccr_last_error(). */
void rccr_segmenter_close(RccrSegmenter *s);

/* The message of the calling thread's last failure, "" if none (never NULL); valid until
 * the thread's next failing call. */
const char *rccr_last_error(void);

/* The library version, e.g. "0.1.0 (ONNX Runtime 1.31.1)" (static). */
const char *rccr_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RCCR_INFER_H */
