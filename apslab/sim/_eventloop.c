/*
 * apslab's optional compiled event loop: the same loop as apslab/sim/static.py's
 * _EventLoop.run (for runs whose admission was decided up front), written in C.
 *
 * It exists for speed only. It follows the same rules step by step and does the same IEEE-754
 * double arithmetic in the same order (t + window, t + service,
 * prompt / prefill + output / decode_rate[B]), so its results are bit-identical to the pure
 * Python path; tests/test_accelerator.py checks that on random scenarios. It is loaded with
 * ctypes (no Python C API), and apslab falls back to the Python loop whenever it is missing.
 *
 * Order of waiting requests: ascending (neg_key, arrival_s, request_id), i.e. highest
 * priority_bid - aging * arrival_s first, then earlier arrival, then lower request id, exactly
 * the lazy-aging queue's tuple order.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    double neg_key;
    double arrival;
    int64_t request_id;
    int64_t index; /* position in the candidate arrays */
} Entry;

typedef struct {
    double finish;
    int64_t gpu;
} Busy;

static int entry_less(const Entry *a, const Entry *b) {
    if (a->neg_key != b->neg_key) return a->neg_key < b->neg_key;
    if (a->arrival != b->arrival) return a->arrival < b->arrival;
    return a->request_id < b->request_id;
}

static void entry_push(Entry *heap, int64_t *size, Entry value) {
    int64_t i = (*size)++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!entry_less(&value, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = value;
}

static Entry entry_pop(Entry *heap, int64_t *size) {
    Entry top = heap[0];
    Entry last = heap[--(*size)];
    int64_t n = *size, i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && entry_less(&heap[child + 1], &heap[child])) child++;
        if (!entry_less(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n > 0) heap[i] = last;
    return top;
}

static int busy_less(const Busy *a, const Busy *b) {
    if (a->finish != b->finish) return a->finish < b->finish;
    return a->gpu < b->gpu;
}

static void busy_push(Busy *heap, int64_t *size, Busy value) {
    int64_t i = (*size)++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!busy_less(&value, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = value;
}

static Busy busy_pop(Busy *heap, int64_t *size) {
    Busy top = heap[0];
    Busy last = heap[--(*size)];
    int64_t n = *size, i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && busy_less(&heap[child + 1], &heap[child])) child++;
        if (!busy_less(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n > 0) heap[i] = last;
    return top;
}

static void idle_push(int64_t *heap, int64_t *size, int64_t value) {
    int64_t i = (*size)++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (value >= heap[parent]) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = value;
}

static int64_t idle_pop(int64_t *heap, int64_t *size) {
    int64_t top = heap[0];
    int64_t last = heap[--(*size)];
    int64_t n = *size, i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap[child + 1] < heap[child]) child++;
        if (heap[child] >= last) break;
        heap[i] = heap[child];
        i = child;
    }
    if (n > 0) heap[i] = last;
    return top;
}

/*
 * Runs the loop. Candidates (admitted requests, in (arrival_s, row) order) are given as
 * columns of length n. decode_rate[B] = decode_tokens_per_s * (a + b * sqrt(B)) for
 * B = 1..max_batch. Outputs: members (request ids, batch after batch, n slots) and per-batch
 * columns (n slots each). Returns the number of batches, or -1 if memory ran out.
 */
int64_t apslab_run_event_loop(
    int64_t n, const double *arrival, const int64_t *request_id, const double *neg_key,
    const int64_t *prompt, const int64_t *output, int64_t gpus, double window,
    int64_t max_batch, int64_t kv_capacity, double prefill, const double *decode_rate,
    int64_t *members, int64_t *batch_size, double *batch_start, double *batch_finish,
    double *batch_service, int64_t *batch_kv, int64_t *batch_gpu) {
    Entry *heap = malloc(sizeof(Entry) * (size_t)(n > 0 ? n : 1));
    Busy *busy = malloc(sizeof(Busy) * (size_t)gpus);
    int64_t *idle = malloc(sizeof(int64_t) * (size_t)gpus);
    if (!heap || !busy || !idle) {
        free(heap);
        free(busy);
        free(idle);
        return -1;
    }
    int64_t heap_size = 0, busy_size = 0, idle_size = 0;
    for (int64_t g = 0; g < gpus; g++) idle_push(idle, &idle_size, g);
    int64_t waiting_kv = 0; /* KV tokens of every waiting request */
    int64_t batches = 0, member_count = 0, k = 0;
    double timer = INFINITY;

    for (;;) {
        double t = (busy_size && busy[0].finish < timer) ? busy[0].finish : timer;
        /* Arrivals first, up to and including t (t moves earlier when a timer is armed). */
        while (k < n && arrival[k] <= t) {
            Entry entry = {neg_key[k], arrival[k], request_id[k], k};
            entry_push(heap, &heap_size, entry);
            waiting_kv += prompt[k] + output[k];
            if (timer == INFINITY && idle_size) {
                timer = arrival[k] + window;
                if (timer < t) t = timer;
            }
            k++;
        }
        if (t == INFINITY) break;
        while (busy_size && busy[0].finish == t) {
            Busy done = busy_pop(busy, &busy_size);
            idle_push(idle, &idle_size, done.gpu);
        }
        if (heap_size) {
            while (idle_size && heap_size) {
                int64_t gpu = idle_pop(idle, &idle_size);
                int64_t size = 0, used = 0, prompt_total = 0, output_total = 0;
                if (heap_size <= max_batch && waiting_kv <= kv_capacity) {
                    /* Everything waiting fits: the batch is all of it, in any order. */
                    for (int64_t i = 0; i < heap_size; i++) {
                        int64_t at = heap[i].index;
                        members[member_count++] = heap[i].request_id;
                        prompt_total += prompt[at];
                        output_total += output[at];
                    }
                    size = heap_size;
                    used = waiting_kv;
                    heap_size = 0;
                } else {
                    while (heap_size && size < max_batch) {
                        int64_t at = heap[0].index;
                        int64_t cost = prompt[at] + output[at];
                        if (used + cost > kv_capacity) break; /* no skipping ahead */
                        Entry entry = entry_pop(heap, &heap_size);
                        members[member_count++] = entry.request_id;
                        used += cost;
                        prompt_total += prompt[at];
                        output_total += output[at];
                        size++;
                    }
                }
                waiting_kv -= used;
                double service = (double)prompt_total / prefill +
                                 (double)output_total / decode_rate[size];
                double finish = t + service;
                Busy running = {finish, gpu};
                busy_push(busy, &busy_size, running);
                batch_size[batches] = size;
                batch_start[batches] = t;
                batch_finish[batches] = finish;
                batch_service[batches] = service;
                batch_kv[batches] = used;
                batch_gpu[batches] = gpu;
                batches++;
            }
            timer = INFINITY;
        }
    }
    free(heap);
    free(busy);
    free(idle);
    return batches;
}

/* Lets the build tools treat this file as an extension module; apslab loads it with ctypes
 * and never imports it, so this is never called. */
void *PyInit__eventloop(void) { return 0; }
