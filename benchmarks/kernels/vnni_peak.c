/* The CPU's int8 dot-product peak: one core issuing AVX-512 VNNI vpdpbusd (u8 x s8 -> s32) on 12
 * independent accumulators, no memory traffic. Prints int8 ops per second (2 per multiply-accumulate).
 * Built and run once per core, concurrently, by benchmarks/floor.py. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define DP(c) c = _mm512_dpbusd_epi32(c, a, b)

int main(void) {
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    __m512i c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    const long iters = 100000000;
    double t = now();
    for (long i = 0; i < iters; i++) {
        DP(c0); DP(c1); DP(c2); DP(c3); DP(c4); DP(c5);
        DP(c6); DP(c7); DP(c8); DP(c9); DP(c10); DP(c11);
    }
    t = now() - t;
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
    /* Printing the sum keeps the compiler from removing the loop. */
    printf("%.6e %d\n", (double)iters * 12 * 64 * 2 / t, _mm512_reduce_add_epi32(s));
    return 0;
}
