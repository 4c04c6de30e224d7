/*
 * libFuzzer target for the worker's line parser and the escaping of what it
 * rejects. The worker is included whole (its main renamed) so the fuzzer
 * exercises the very code the binary runs.
 */
#define main worker_main
#include "worker.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t v = 0;
    enum parse_result r = parse_line(s, size, &v);
    /* Anything accepted must be a decimal that reads back to the same value. */
    if (r == PARSE_OK) {
        char buf[32];
        size_t n = fmt_i64(buf, v);
        int64_t again = 0;
        if (parse_line(buf, n, &again) != PARSE_OK || again != v)
            __builtin_trap();
        bool saw_digit = false;
        for (size_t i = 0; i < size; i++) {
            if (s[i] == '\n' || s[i] == '\0')
                __builtin_trap(); /* a NUL or newline inside a number */
            if (s[i] >= '0' && s[i] <= '9')
                saw_digit = true;
        }
        if (!saw_digit)
            __builtin_trap();
    }
    char out[SHOW_MAX * 4 + 4];
    size_t n = escape_for_log(out, s, size);
    if (n > SHOW_MAX + 3)
        __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
            __builtin_trap(); /* a log line must stay one printable line */
    return 0;
}
