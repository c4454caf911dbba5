/*
 * segment.c: segment images with an rccr ONNX model through the rccr-infer C ABI.
 *
 *   segment [--provider auto|cpu|cuda|tensorrt] [--input-size WxH] [--batch-size N]
 *           [--threads N] MODEL.onnx OUT_DIR IMAGE.ppm...
 *
 * Reads binary PPM (P6, 8-bit RGB) images, segments consecutive images of one size in one
 * rccr_segmenter_run call, and writes each image's train ids as a binary PGM (P5)
 * OUT_DIR/<name>.pgm (the same ids `rccr-infer --out` writes to trainIds/). PPM keeps the
 * example free of image libraries; convert with e.g. `convert in.png out.ppm`.
 *
 * Build (see Makefile / CMakeLists.txt next to this file):
 *   cc -I infer/include segment.c -L target/release/examples -lrccr_infer \
 *      -Wl,-rpath,$PWD/target/release/examples
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rccr_infer.h"

typedef struct {
    const char *path;
    int32_t width, height;
    uint8_t *rgb;
} Image;

/* Skips whitespace and '#' comments of a PNM header. */
static void skip_space(FILE *f) {
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return;
        }
    }
}

/* Reads a P6 PPM with maxval 255; returns 0 on success. */
static int read_ppm(const char *path, Image *img) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "segment: cannot open %s\n", path);
        return -1;
    }
    char magic[3] = {0};
    int w = 0, h = 0, maxval = 0, ok = fread(magic, 1, 2, f) == 2 && strcmp(magic, "P6") == 0;
    if (ok) {
        skip_space(f);
        ok = fscanf(f, "%d", &w) == 1;
        skip_space(f);
        ok = ok && fscanf(f, "%d", &h) == 1;
        skip_space(f);
        ok = ok && fscanf(f, "%d", &maxval) == 1 && maxval == 255 && w > 0 && h > 0;
        ok = ok && fgetc(f) != EOF; /* the single whitespace before the pixels */
    }
    size_t bytes = ok ? (size_t)w * (size_t)h * 3 : 0;
    img->rgb = ok ? malloc(bytes) : NULL;
    ok = ok && img->rgb && fread(img->rgb, 1, bytes, f) == bytes;
    fclose(f);
    if (!ok) {
        fprintf(stderr, "segment: %s is not an 8-bit binary PPM (P6)\n", path);
        free(img->rgb);
        img->rgb = NULL;
        return -1;
    }
    img->path = path;
    img->width = w;
    img->height = h;
    return 0;
}

/* Writes train ids as a P5 PGM named after the image into out_dir. */
static int write_pgm(const char *out_dir, const Image *img, const uint8_t *ids) {
    const char *base = strrchr(img->path, '/');
    base = base ? base + 1 : img->path;
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%.*s.pgm", out_dir,
                     (int)(strrchr(base, '.') ? strrchr(base, '.') - base : (long)strlen(base)), base);
    FILE *f = n > 0 && (size_t)n < sizeof path ? fopen(path, "wb") : NULL;
    if (!f) {
        fprintf(stderr, "segment: cannot write into %s\n", out_dir);
        return -1;
    }
    size_t pixels = (size_t)img->width * (size_t)img->height;
    fprintf(f, "P5\n%d %d\n255\n", img->width, img->height);
    int ok = fwrite(ids, 1, pixels, f) == pixels;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int provider_code(const char *name) {
    if (strcmp(name, "cpu") == 0) return RCCR_PROVIDER_CPU;
    if (strcmp(name, "cuda") == 0) return RCCR_PROVIDER_CUDA;
    if (strcmp(name, "tensorrt") == 0) return RCCR_PROVIDER_TENSORRT;
    return RCCR_PROVIDER_AUTO;
}

/* Segments images[0..count) (all of one size) in one call and writes their outputs. */
static int segment_group(RccrSegmenter *seg, Image *images, int count, const char *out_dir) {
    size_t frame = (size_t)images[0].width * (size_t)images[0].height;
    uint8_t *rgb = malloc(frame * 3 * (size_t)count);
    uint8_t *ids = malloc(frame * (size_t)count);
    int status = rgb && ids ? RCCR_OK : -1;
    for (int i = 0; status == RCCR_OK && i < count; i++) {
        memcpy(rgb + frame * 3 * (size_t)i, images[i].rgb, frame * 3);
    }
    if (status == RCCR_OK) {
        status = rccr_segmenter_run(seg, rgb, count, images[0].height, images[0].width, ids);
        if (status != RCCR_OK) {
            fprintf(stderr, "segment: run failed (status %d): %s\n", status, rccr_last_error());
        }
    }
    for (int i = 0; status == RCCR_OK && i < count; i++) {
        status = write_pgm(out_dir, &images[i], ids + frame * (size_t)i);
    }
    free(rgb);
    free(ids);
    return status;
}

int main(int argc, char **argv) {
    RccrOptions options = rccr_options_default();
    int arg = 1;
    for (; arg + 1 < argc && strncmp(argv[arg], "--", 2) == 0; arg += 2) {
        const char *flag = argv[arg], *value = argv[arg + 1];
        if (strcmp(flag, "--provider") == 0) {
            options.provider = provider_code(value);
        } else if (strcmp(flag, "--input-size") == 0) {
            if (sscanf(value, "%dx%d", &options.input_width, &options.input_height) != 2) {
                fprintf(stderr, "segment: --input-size %s: expected WxH\n", value);
                return 2;
            }
        } else if (strcmp(flag, "--batch-size") == 0) {
            options.batch_size = atoi(value);
        } else if (strcmp(flag, "--threads") == 0) {
            options.threads = atoi(value);
        } else {
            fprintf(stderr, "segment: unknown option %s\n", flag);
            return 2;
        }
    }
    if (argc - arg < 3) {
        fprintf(stderr, "usage: %s [--provider P] [--input-size WxH] [--batch-size N] "
                        "[--threads N] MODEL.onnx OUT_DIR IMAGE.ppm...\n", argv[0]);
        return 2;
    }
    const char *model = argv[arg], *out_dir = argv[arg + 1];
    int count = argc - arg - 2;
    Image *images = calloc((size_t)count, sizeof *images);
    for (int i = 0; i < count; i++) {
        if (!images || read_ppm(argv[arg + 2 + i], &images[i]) != 0) return 1;
    }

    RccrSegmenter *seg = NULL;
    int status = rccr_segmenter_open(model, &options, &seg);
    if (status != RCCR_OK) {
        fprintf(stderr, "segment: cannot open %s (status %d): %s\n", model, status, rccr_last_error());
        return 1;
    }
    int32_t classes = 0, width = 0, height = 0;
    const char *provider = "?", *first_class = "?";
    rccr_segmenter_num_classes(seg, &classes);
    rccr_segmenter_input_size(seg, &width, &height);
    rccr_segmenter_provider(seg, &provider);
    rccr_segmenter_class_name(seg, 0, &first_class);
    printf("rccr-infer %s: %d classes (0 = %s), input %dx%d, provider %s\n", rccr_version(),
           classes, first_class, width, height, provider);

    /* Consecutive images of one size go into one call. */
    for (int start = 0, end; status == RCCR_OK && start < count; start = end) {
        for (end = start + 1; end < count && images[end].width == images[start].width &&
                              images[end].height == images[start].height;
             end++) {
        }
        status = segment_group(seg, images + start, end - start, out_dir);
        if (status == RCCR_OK) {
            printf("segmented %d image(s) of %dx%d\n", end - start, images[start].width,
                   images[start].height);
        }
    }
    rccr_segmenter_close(seg);
    for (int i = 0; i < count; i++) free(images[i].rgb);
    free(images);
    return status == RCCR_OK ? 0 : 1;
}
