#ifndef SYND_CCRC32C_SHIM_H
#define SYND_CCRC32C_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// CRC-32C with the SSE4.2 instruction where the CPU has it (checked at run
// time); returns 0 and sets *ok = 0 elsewhere, so the caller uses its table.
#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static inline uint32_t synd_crc32c_sse42(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static inline uint32_t synd_crc32c_hardware(const uint8_t *p, size_t n, int *ok) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        *ok = 1;
        return synd_crc32c_sse42(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
    }
#endif
    *ok = 0;
    return 0;
}

// The CRC-32C of bytes that follow those whose CRC-32C is `previous`.
static inline uint32_t synd_crc32c_hardware_continue(uint32_t previous, const uint8_t *p, size_t n, int *ok) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        *ok = 1;
        return synd_crc32c_sse42(previous ^ 0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
    }
#endif
    *ok = 0;
    return 0;
}

#endif
