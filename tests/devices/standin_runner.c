/* Stand-in for the on-device runner (runtime/bin/ppocr_runner), for tests only.
 *
 * Android's bionic binaries (the real runner links Paddle Lite's Android .so) cannot run in
 * the arm64 Debian chroot the test devices use, so the deploy mechanics are exercised with
 * this statically linked aarch64 program instead. It follows the runner contract:
 *
 *   runtime/bin/ppocr_runner --config config.json --image test/image.jpg --threads N
 *       --power-mode MODE --warmup W --repeats R          (cwd = the installed release)
 *   runtime/bin/ppocr_runner --config config.json --batch list.tsv --out DIR [--threads N] [--power-mode M]
 *
 * It reads config.json and every model file it names ("model": "...") plus the image,
 * W + R times, and times that work. It does NOT run Paddle Lite and recognises nothing:
 * its result has "standin": true and an empty "lines" list. In batch mode it reads every
 * image of the list (`KIND<TAB>ID<TAB>IMAGE` lines) and writes one line per item to
 * DIR/results.jsonl, each with "standin": true and nothing recognised. A missing or
 * unreadable file is an error: a message on stderr and exit status 2. The last stdout
 * line is the JSON.
 *
 * Build: aarch64-linux-gnu-gcc -static -O2 -o ppocr_runner standin_runner.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *slurp(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); fclose(f); errno = ENOMEM; return NULL; }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); errno = EIO; return NULL; }
    buf[n] = 0;
    *size = n;
    return buf;
}

/* Reads the file and folds its bytes into a checksum: the "work" being timed. */
static int touch_file(const char *path, unsigned long *sum, long *size) {
    char *b = slurp(path, size);
    if (!b) return -1;
    unsigned long s = 1469598103UL;
    for (long i = 0; i < *size; i++) s = (s ^ (unsigned char)b[i]) * 16777619UL;
    *sum = s;
    free(b);
    return 0;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* The string value after "key": in the config's "det" / "rec" sections (first occurrence after the section key). */
static int config_model(const char *cfg, const char *section, char *out, size_t outlen) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", section);
    const char *p = strstr(cfg, key);
    if (!p) return 0;
    p = strstr(p, "\"model\"");
    if (!p) return 0;
    p = strchr(p + 7, '"');
    if (!p) return 0;
    p++;
    size_t i = 0;
    while (*p && *p != '"' && i + 1 < outlen) {
        if (*p == '\\' && p[1]) p++;
        out[i++] = *p++;
    }
    out[i] = 0;
    return 1;
}

/* Batch mode: the models are read once, then every listed image; one results.jsonl line per item. */
static int run_batch(const char *list, const char *out, int threads, const char *power, const int *have, char models[][1024],
                     const char **sections) {
    for (int k = 0; k < 2; k++) {
        unsigned long sum; long size;
        if (have[k] && touch_file(models[k], &sum, &size) != 0) {
            fprintf(stderr, "ppocr_runner (stand-in): cannot read %s model %s: %s\n", sections[k], models[k], strerror(errno));
            return 2;
        }
    }
    long size;
    char *text = slurp(list, &size);
    if (!text) { fprintf(stderr, "ppocr_runner (stand-in): cannot read batch list %s: %s\n", list, strerror(errno)); return 2; }
    char path[4096];
    snprintf(path, sizeof path, "%s/results.jsonl", out);
    FILE *res = fopen(path, "w");
    if (!res) { fprintf(stderr, "ppocr_runner (stand-in): cannot write %s: %s\n", path, strerror(errno)); free(text); return 2; }
    int items = 0, errors = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!*line || *line == '#') continue;
        char *kind = line, *id = strchr(kind, '\t'), *img = id ? strchr(id + 1, '\t') : NULL;
        if (!img) { fprintf(stderr, "ppocr_runner (stand-in): bad batch line: %s\n", line); errors++; continue; }
        *id++ = 0;
        *img++ = 0;
        items++;
        unsigned long isum; long isize;
        fprintf(res, "{\"id\":");
        json_str(res, id);
        fprintf(res, ",\"kind\":");
        json_str(res, kind);
        if (touch_file(img, &isum, &isize) != 0) {
            fprintf(res, ",\"standin\":true,\"error\":\"cannot read image\"}\n");
            fprintf(stderr, "ppocr_runner (stand-in): %s %s: cannot read image %s: %s\n", kind, id, img, strerror(errno));
            errors++;
            continue;
        }
        fprintf(res, ",\"standin\":true,\"image_bytes\":%ld}\n", isize);
    }
    fclose(res);
    free(text);
    printf("ppocr_runner stand-in: read %d batch images; Paddle Lite was not run\n", items);
    printf("{\"standin\":true,\"note\":\"stand-in runner: reads the batch's images and writes results without recognising anything\",");
    printf("\"batch\":{\"items\":%d,\"errors\":%d,\"out\":", items, errors);
    json_str(stdout, out);
    printf(",\"results\":\"results.jsonl\"},\"threads\":%d,\"power_mode\":", threads);
    json_str(stdout, power);
    printf(",\"warmup\":0,\"repeats\":1}\n");
    return errors ? 2 : 0;
}

int main(int argc, char **argv) {
    const char *config = NULL, *image = NULL, *power = "LITE_POWER_HIGH", *batch = NULL, *out = NULL;
    int threads = 1, warmup = 0, repeats = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "ppocr_runner (stand-in): %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--image")) image = v;
        else if (!strcmp(a, "--batch")) batch = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--power-mode")) power = v;
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--repeats")) repeats = atoi(v);
        else { fprintf(stderr, "ppocr_runner (stand-in): unknown option %s\n", a); return 2; }
        i++;
    }
    if (!config || !(image || batch)) { fprintf(stderr, "ppocr_runner (stand-in): --config and --image (or --batch) are required\n"); return 2; }
    if (batch && !out) { fprintf(stderr, "ppocr_runner (stand-in): --batch needs --out DIR\n"); return 2; }
    if (repeats < 1 || warmup < 0) { fprintf(stderr, "ppocr_runner (stand-in): bad --warmup/--repeats\n"); return 2; }
    long cfg_size;
    char *cfg = slurp(config, &cfg_size);
    if (!cfg) { fprintf(stderr, "ppocr_runner (stand-in): cannot read %s: %s\n", config, strerror(errno)); return 2; }
    const char *sections[2] = {"det", "rec"};
    char models[2][1024];
    int have[2];
    for (int k = 0; k < 2; k++) have[k] = config_model(cfg, sections[k], models[k], sizeof models[k]);
    if (!have[0] && !have[1]) { fprintf(stderr, "ppocr_runner (stand-in): %s names no model\n", config); return 2; }
    if (batch) return run_batch(batch, out, threads, power, have, models, sections);
    double ms[2] = {0, 0};
    unsigned long sums[2] = {0, 0};
    long sizes[2] = {0, 0};
    for (int it = 0; it < warmup + repeats; it++) {
        unsigned long isum; long isize;
        if (touch_file(image, &isum, &isize) != 0) {
            fprintf(stderr, "ppocr_runner (stand-in): cannot read image %s: %s\n", image, strerror(errno));
            return 2;
        }
        for (int k = 0; k < 2; k++) {
            if (!have[k]) continue;
            double t0 = now_ms();
            if (touch_file(models[k], &sums[k], &sizes[k]) != 0) {
                fprintf(stderr, "ppocr_runner (stand-in): cannot read %s model %s: %s\n", sections[k], models[k], strerror(errno));
                return 2;
            }
            if (it >= warmup) ms[k] += now_ms() - t0;
        }
    }
    printf("ppocr_runner stand-in: read the models %d times; Paddle Lite was not run\n", warmup + repeats);
    printf("{\"standin\":true,\"note\":\"stand-in runner: reads config, image and model files and times that; it does not run Paddle Lite and recognises no text\",\"lines\":[],");
    printf("\"timings_ms\":{\"det\":%.3f,\"rec\":%.3f,\"total\":%.3f},", ms[0] / repeats, ms[1] / repeats, (ms[0] + ms[1]) / repeats);
    printf("\"threads\":%d,\"power_mode\":", threads);
    json_str(stdout, power);
    printf(",\"warmup\":%d,\"repeats\":%d,\"models\":{", warmup, repeats);
    int first = 1;
    for (int k = 0; k < 2; k++) {
        if (!have[k]) continue;
        printf("%s\"%s\":{\"path\":", first ? "" : ",", sections[k]);
        json_str(stdout, models[k]);
        printf(",\"bytes\":%ld,\"fnv1a\":\"%016lx\"}", sizes[k], sums[k]);
        first = 0;
    }
    printf("}}\n");
    free(cfg);
    return 0;
}
