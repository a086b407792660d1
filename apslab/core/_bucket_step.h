/*
 * TokenBucket.consume's update, shared by the compiled kernels that decide token buckets
 * (apslab/core/_bucket_walk.c and apslab/sim/_eventloop.c), so its double arithmetic is written
 * once, in Python's order:
 *   available = min(burst, tokens + (now - last) * rate); admit if available >= cost.
 */
#ifndef APSLAB_BUCKET_STEP_H
#define APSLAB_BUCKET_STEP_H

/* Refill *tokens to `now` (and set *last to it), then take `cost` if it is there: 1 = admitted,
 * 0 = rejected (the bucket keeps what it holds). */
static inline int bucket_step(double *tokens, double *last, double now, double rate,
                              double burst, double cost) {
    double refilled = *tokens + (now - *last) * rate;
    double available = refilled < burst ? refilled : burst; /* Python's min(burst, refilled) */
    *last = now;
    if (available >= cost) {
        *tokens = available - cost;
        return 1;
    }
    *tokens = available;
    return 0;
}

#endif
