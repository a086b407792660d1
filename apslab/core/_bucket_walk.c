/*
 * apslab's optional compiled token-bucket walk: apslab/core/limiter.py's consume_columns for the
 * rows numpy could not decide, written in C.
 *
 * It exists for speed only and does TokenBucket.consume's IEEE-754 double arithmetic in the same
 * order, so its decisions are bit-identical to the pure Python walk (tests/test_limiter.py and
 * tests/test_accelerator.py compare them). It is loaded with ctypes (no Python C API), and
 * apslab falls back to the Python walk whenever it is missing.
 */
#include <stdint.h>

#include "_bucket_step.h"

/*
 * The walk of apslab.core.limiter.consume_columns: token-bucket decisions for the rows whose bucket
 * was not exactly full (numpy decided those). Rows are grouped by tenant, in time order within a
 * group. The arithmetic is TokenBucket.consume's, operation for operation (bucket_step).
 * tokens[] and last[] hold each tenant's state before the call and are updated for tenants
 * whose last row is walked.
 */
void apslab_walk_buckets(int64_t n, const double *times, const int64_t *costs,
                         const uint8_t *first, const uint8_t *full, const uint8_t *last_row,
                         const int64_t *tenant, const double *rates, const double *bursts,
                         double *tokens, double *last, uint8_t *decided) {
    double rate = 0.0, burst = 0.0, level = 0.0, updated = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (full[i]) continue;
        int64_t who = tenant[i];
        if (first[i]) {
            rate = rates[who];
            burst = bursts[who];
            level = tokens[who];
            updated = last[who];
        } else if (full[i - 1]) {
            /* The row before found a full bucket: the state it left is known exactly. */
            double previous_cost = (double)costs[i - 1];
            rate = rates[who];
            burst = bursts[who];
            updated = times[i - 1];
            level = burst >= previous_cost ? burst - previous_cost : burst;
        }
        decided[i] = (uint8_t)bucket_step(&level, &updated, times[i], rate, burst,
                                          (double)costs[i]);
        if (last_row[i]) {
            tokens[who] = level;
            last[who] = updated;
        }
    }
}

/* Lets the build tools treat this file as an extension module; apslab loads it with ctypes
 * and never imports it, so this is never called. */
void *PyInit__bucket_walk(void) { return 0; }
