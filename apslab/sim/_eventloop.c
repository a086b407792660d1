/*
 * apslab's optional compiled event loops: apslab_run_event_loop, the same loop as
 * apslab/sim/static.py's _EventLoop.run (for runs whose admission was decided up front), and
 * apslab_run_continuous, the continuous engine of apslab/sim/continuous.py (further below),
 * written in C.
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
#include <string.h>

#include "../core/_bucket_step.h"

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

/* A binary min-heap of int64 values: the idle GPUs here, each tenant's waiting handles (VTC). */
static void int_heap_push(int64_t *heap, int64_t *size, int64_t value) {
    int64_t i = (*size)++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (value >= heap[parent]) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = value;
}

static int64_t int_heap_pop(int64_t *heap, int64_t *size) {
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
    for (int64_t g = 0; g < gpus; g++) int_heap_push(idle, &idle_size, g);
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
            int_heap_push(idle, &idle_size, done.gpu);
        }
        if (heap_size) {
            while (idle_size && heap_size) {
                int64_t gpu = int_heap_pop(idle, &idle_size);
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

/* ============================================================================================
 * The continuous (iteration-level) engine: apslab/sim/continuous.py's _Loop.run with
 * apslab/core/continuous_batcher.py, apslab/core/policies.py, IterationCost and
 * TokenBucket.consume, in C. Bit-identical to the Python reference (tests/
 * test_continuous_accelerator.py compares every column, the totals and the iteration log).
 *
 * Requests are known by their candidate index h (0..count-1, (arrival_s, row) order), which is
 * also the FCFS and VTC order (arrival_s, request_id). The priority policy's order
 * (-key, arrival_s, request_id) arrives precomputed as an integer rank per candidate (no ties).
 *
 * Data structures:
 *   - waiting queue, priority / fcfs: one binary min-heap of (rank, h);
 *   - waiting queue, vtc: per tenant a binary min-heap of h, and an indexed binary min-heap of the
 *     backlogged tenants keyed by (counter, tenant) (a counter only grows: sift down on change);
 *   - per GPU: the running list (priority: sorted by rank, insertion by binary search and
 *     memmove; fcfs / vtc: admission order), its in-flight iteration (h, n) pairs, free blocks,
 *     and when its iteration ends (INFINITY: idle);
 *   - per request: computed c, generated g, blocks held, time of the last token.
 * Integers are exact: per-iteration work and the bytes / FLOPs totals are 128-bit (the totals of
 * a million-request run reach ~1e19 FLOPs, past int64), converted to double once per iteration
 * like Python's int / float. Float operations are Python's, in Python's order.
 * ============================================================================================ */

__extension__ typedef __int128 wide_t;
__extension__ typedef unsigned __int128 uwide_t;

enum { POLICY_PRIORITY = 0, POLICY_FCFS = 1, POLICY_VTC = 2 };
/* apslab.core.limiter's reason codes: status[] is written into the run's reason column as is. */
enum { STATUS_ADMITTED = 0, STATUS_RATE_LIMITED = 1, STATUS_QUEUE_FULL = 5 };

/* One row of the iteration log (IterationLog's columns); Python reads it as a structured array. */
typedef struct {
    int64_t gpu;
    double start_s;
    double duration_s;
    int64_t requests;
    int64_t prefill_tokens;
    int64_t decode_tokens;
    int64_t blocks_used;
    int64_t preempted;
} ContinuousIteration;

typedef struct {
    int64_t key; /* rank (priority) or h (fcfs) */
    int64_t h;
} Waiting;

typedef struct {
    int64_t *items;
    int64_t len, cap;
} HandleHeap;

typedef struct {
    int64_t *running; /* running list */
    int64_t len, cap;
    int64_t *sched_h, *sched_n; /* in-flight iteration: (handle, tokens), scheduled order */
    int64_t sched_len;          /* <= len, so the same capacity */
    int64_t free_blocks;
    double end; /* when the in-flight iteration ends; INFINITY when idle */
} Gpu;

typedef struct {
    /* candidates */
    int64_t count;
    const int64_t *row, *prompt, *output, *tenant, *rank;
    /* rules */
    int64_t gpus, total_blocks, block_size, max_num_seqs, max_tokens, policy;
    /* cost model */
    int64_t weight_bytes, kv_bytes_per_token, matmul_flops_per_token, attention_flops_per_pair;
    double bandwidth, flop_rate, overhead_s;
    /* VTC */
    int64_t tenants;
    const double *shares;
    double input_weight, output_weight;
    double *out_charge;   /* per tenant: output_weight / share, a token's charge and service */
    double *counter;
    HandleHeap *queue;    /* per tenant */
    int64_t *theap;       /* backlogged tenants, min-heap on (counter, tenant) */
    int64_t *tpos;        /* position in theap, -1: not backlogged */
    int64_t theap_len;
    int64_t vtc_waiting;
    /* priority / fcfs waiting heap */
    Waiting *wheap;
    int64_t wheap_len;
    /* per request */
    int64_t *computed, *generated, *blocks;
    double *last_token;
    uint8_t *admitted_once;
    /* GPUs */
    Gpu *gpu;
    /* outputs, by trace row */
    double *start, *first, *finish, *max_tbt;
    int64_t *preemptions;
    int32_t *finish_gpu;
    /* totals */
    int64_t it_count, it_requests, it_tokens;
    double *busy;
    wide_t moved_total, flops_total;
    double block_seconds, last_end;
    /* log */
    int keep;
    ContinuousIteration *log;
    int64_t log_len, log_cap;
    /* the service difference between backlogged tenants (apslab.core.fairness), when tracked */
    int fair;
    double *fair_service;      /* per tenant */
    uint8_t *fair_backlogged;  /* per tenant */
    double *fair_baseline;     /* tenants x tenants: S_f(b) - S_g(b) of each active pair */
    uint8_t *fair_changed;     /* per tenant, since the last settle */
    int64_t *fair_waiting;     /* waiting requests per tenant */
    double fair_max;
} Loop;

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); } /* a >= 0 */

/* -- priority / fcfs waiting heap, ordered by key ------------------------------------------- */

static void wheap_push(Loop *L, int64_t h) {
    Waiting value = {L->rank[h], h};
    int64_t i = L->wheap_len++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (L->wheap[parent].key <= value.key) break;
        L->wheap[i] = L->wheap[parent];
        i = parent;
    }
    L->wheap[i] = value;
}

static void wheap_pop(Loop *L) {
    Waiting last = L->wheap[--L->wheap_len];
    int64_t n = L->wheap_len, i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && L->wheap[child + 1].key < L->wheap[child].key) child++;
        if (L->wheap[child].key >= last.key) break;
        L->wheap[i] = L->wheap[child];
        i = child;
    }
    if (n > 0) L->wheap[i] = last;
}

/* -- VTC: per-tenant heaps of handles, and the indexed heap of backlogged tenants ------------ */

/* int_heap_push into a tenant's queue, grown first when full; 0, or -1 when memory ran out. */
static int hheap_push(HandleHeap *q, int64_t h) {
    if (q->len == q->cap) {
        int64_t cap = q->cap ? 2 * q->cap : 16;
        int64_t *items = realloc(q->items, sizeof(int64_t) * (size_t)cap);
        if (!items) return -1;
        q->items = items;
        q->cap = cap;
    }
    int_heap_push(q->items, &q->len, h);
    return 0;
}

/* Tenant order: smaller counter first, ties lower tenant index (Python's min by (counter, u)). */
static int tenant_less(const Loop *L, int64_t a, int64_t b) {
    double ca = L->counter[a], cb = L->counter[b];
    if (ca != cb) return ca < cb;
    return a < b;
}

static void theap_place(Loop *L, int64_t i, int64_t u) {
    L->theap[i] = u;
    L->tpos[u] = i;
}

static void theap_up(Loop *L, int64_t i) {
    int64_t u = L->theap[i];
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!tenant_less(L, u, L->theap[parent])) break;
        theap_place(L, i, L->theap[parent]);
        i = parent;
    }
    theap_place(L, i, u);
}

static void theap_down(Loop *L, int64_t i) {
    int64_t u = L->theap[i], n = L->theap_len;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && tenant_less(L, L->theap[child + 1], L->theap[child])) child++;
        if (!tenant_less(L, L->theap[child], u)) break;
        theap_place(L, i, L->theap[child]);
        i = child;
    }
    theap_place(L, i, u);
}

/* A counter grew: restore the heap if the tenant is backlogged. */
static void vtc_charged(Loop *L, int64_t u) {
    if (L->tpos[u] >= 0) theap_down(L, L->tpos[u]);
}

/* -- the service difference (ServiceDifference in apslab/core/fairness.py) ---------------- */

/* Update the maximum with every active pair of tenant u: |(S_u - S_o) - baseline[u][o]|. */
static void fair_evaluate(Loop *L, int64_t u) {
    if (!L->fair_backlogged[u]) return;
    int64_t T = L->tenants;
    double mine = L->fair_service[u];
    for (int64_t o = 0; o < T; o++) {
        if (!L->fair_backlogged[o] || o == u) continue;
        double d = fabs(mine - L->fair_service[o] - L->fair_baseline[u * T + o]);
        if (d > L->fair_max) L->fair_max = d;
    }
}

static void fair_backlog(Loop *L, int64_t u, int on) {
    int64_t T = L->tenants;
    if (on) {
        for (int64_t o = 0; o < T; o++) {
            if (!L->fair_backlogged[o]) continue;
            L->fair_baseline[u * T + o] = L->fair_service[u] - L->fair_service[o];
            L->fair_baseline[o * T + u] = L->fair_service[o] - L->fair_service[u];
        }
        L->fair_backlogged[u] = 1;
    } else {
        fair_evaluate(L, u);
        L->fair_backlogged[u] = 0;
    }
}

static void fair_pushed(Loop *L, int64_t h) {
    if (!L->fair) return;
    int64_t u = L->tenant[h];
    if (L->fair_waiting[u]++ == 0) fair_backlog(L, u, 1);
}

static void fair_popped(Loop *L, int64_t h) {
    if (!L->fair) return;
    int64_t u = L->tenant[h];
    if (--L->fair_waiting[u] == 0) fair_backlog(L, u, 0);
}

static void fair_settle(Loop *L) {
    if (!L->fair) return;
    for (int64_t u = 0; u < L->tenants; u++) {
        if (!L->fair_changed[u]) continue;
        fair_evaluate(L, u);
        L->fair_changed[u] = 0;
    }
}

/* Turns the tracker on with zeroed per-tenant state (L->tenants of them); 0, or -1 when memory
 * ran out (loop_free releases what was allocated either way). */
static int fair_alloc(Loop *L) {
    size_t t = (size_t)(L->tenants > 0 ? L->tenants : 1);
    L->fair = 1;
    L->fair_service = calloc(t, sizeof(double));
    L->fair_backlogged = calloc(t, 1);
    L->fair_baseline = calloc(t * t, sizeof(double));
    L->fair_changed = calloc(t, 1);
    L->fair_waiting = calloc(t, sizeof(int64_t));
    int ok = L->fair_service && L->fair_backlogged && L->fair_baseline && L->fair_changed &&
             L->fair_waiting;
    return ok ? 0 : -1;
}

/* -- the policy interface: push, len, peek, pop, place, admitted, emitted -------------------- */

static int waiting_push(Loop *L, int64_t h) {
    if (L->policy != POLICY_VTC) {
        wheap_push(L, h);
        fair_pushed(L, h);
        return 0;
    }
    int64_t u = L->tenant[h];
    if (L->tpos[u] < 0) {
        /* Lift a tenant that had no waiting request: max(own, min of the backlogged others). */
        if (L->theap_len) {
            double others = L->counter[L->theap[0]];
            if (others > L->counter[u]) L->counter[u] = others;
        }
        L->theap_len++;
        theap_place(L, L->theap_len - 1, u);
        theap_up(L, L->theap_len - 1);
    }
    if (hheap_push(&L->queue[u], h) < 0) return -1;
    L->vtc_waiting++;
    fair_pushed(L, h);
    return 0;
}

static int64_t waiting_len(const Loop *L) {
    return L->policy == POLICY_VTC ? L->vtc_waiting : L->wheap_len;
}

static int64_t waiting_peek(const Loop *L) {
    if (L->policy != POLICY_VTC) return L->wheap[0].h;
    return L->queue[L->theap[0]].items[0]; /* the least-served tenant's oldest request */
}

static void waiting_pop(Loop *L) {
    if (L->policy != POLICY_VTC) {
        wheap_pop(L);
        return;
    }
    int64_t u = L->theap[0];
    int_heap_pop(L->queue[u].items, &L->queue[u].len);
    L->vtc_waiting--;
    if (L->queue[u].len == 0) { /* no longer backlogged: remove the top */
        L->tpos[u] = -1;
        L->theap_len--;
        if (L->theap_len) {
            theap_place(L, 0, L->theap[L->theap_len]);
            theap_down(L, 0);
        }
    }
}

static int gpu_reserve(Gpu *G, int64_t need) {
    if (need <= G->cap) return 0;
    int64_t cap = G->cap ? G->cap : 16;
    while (cap < need) cap *= 2;
    int64_t *running = realloc(G->running, sizeof(int64_t) * (size_t)cap);
    if (!running) return -1;
    G->running = running;
    int64_t *sh = realloc(G->sched_h, sizeof(int64_t) * (size_t)cap);
    if (!sh) return -1;
    G->sched_h = sh;
    int64_t *sn = realloc(G->sched_n, sizeof(int64_t) * (size_t)cap);
    if (!sn) return -1;
    G->sched_n = sn;
    G->cap = cap;
    return 0;
}

/* Into the running list: priority keeps it sorted by rank (insort); fcfs / vtc append. */
static int running_place(Loop *L, Gpu *G, int64_t h) {
    if (gpu_reserve(G, G->len + 1) < 0) return -1;
    int64_t at = G->len;
    if (L->policy == POLICY_PRIORITY) {
        int64_t lo = 0, hi = G->len, key = L->rank[h];
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (key < L->rank[G->running[mid]]) hi = mid;
            else lo = mid + 1;
        }
        at = lo;
        memmove(G->running + at + 1, G->running + at, sizeof(int64_t) * (size_t)(G->len - at));
    }
    G->running[at] = h;
    G->len++;
    return 0;
}

/* -- a scheduling round (ContinuousBatcher.schedule) and its iteration ---------------------- */

typedef struct {
    int64_t count, decode, preempted;
    wide_t context, new_tokens, pairs;
} Round;

static void round_take(Loop *L, Gpu *G, Round *R, int64_t h, int64_t n, double t) {
    int64_t c = L->computed[h];
    G->sched_h[G->sched_len] = h;
    G->sched_n[G->sched_len] = n;
    G->sched_len++;
    R->count++;
    R->context += (wide_t)c + n;
    R->new_tokens += n;
    R->pairs += (wide_t)n * c + (wide_t)n * (n + 1) / 2;
    if (n == 1 && L->generated[h] && c == L->prompt[h] + L->generated[h] - 1) R->decode++;
    double *start = &L->start[L->row[h]];
    if (*start != *start) *start = t; /* first iteration that schedules it */
}

/* One round of GPU g at t. Returns -1 when memory ran out, else 0; sets the GPU's end. */
static int gpu_round(Loop *L, int64_t g, double t) {
    Gpu *G = &L->gpu[g];
    const int64_t *prompt = L->prompt;
    int64_t *computed = L->computed, *generated = L->generated, *blocks = L->blocks;
    int64_t free = G->free_blocks, budget = L->max_tokens, bs = L->block_size;
    Round R = {0, 0, 0, 0, 0, 0};
    G->sched_len = 0;
    /* 1. Running pass, in list order while budget is left: n = min(P + g - c, budget); while
     *    its new blocks are not free, preempt the last running request (c = 0, blocks freed,
     *    back to waiting); if that was this request, the pass ends. */
    int64_t i = 0;
    while (i < G->len && budget > 0) {
        int64_t h = G->running[i];
        int64_t c = computed[h];
        int64_t n = prompt[h] + generated[h] - c;
        if (n > budget) n = budget;
        int64_t need = ceil_div(c + n, bs) - blocks[h];
        int64_t victim = -1;
        while (need > free) {
            victim = G->running[--G->len];
            free += blocks[victim];
            blocks[victim] = 0;
            computed[victim] = 0;
            L->preemptions[L->row[victim]]++;
            R.preempted++;
            if (waiting_push(L, victim) < 0) return -1;
            if (victim == h) break;
        }
        if (victim == h) break;
        free -= need;
        blocks[h] += need;
        budget -= n;
        round_take(L, G, &R, h, n, t);
        i++;
    }
    /* 2. Waiting pass, only if nothing was preempted: the policy's next request, n = min(P + g,
     *    budget), ceil(n / block_size) blocks or stop (no skipping ahead); seats and budget. */
    if (!R.preempted) {
        while (waiting_len(L) && G->len < L->max_num_seqs && budget > 0) {
            int64_t h = waiting_peek(L);
            int64_t n = prompt[h] + generated[h];
            if (n > budget) n = budget;
            int64_t need = ceil_div(n, bs);
            if (need > free) break;
            waiting_pop(L);
            fair_popped(L, h);
            if (running_place(L, G, h) < 0) return -1;
            if (!L->admitted_once[h]) {
                L->admitted_once[h] = 1;
                /* The prompt is charged (VTC) and is service, once: input_weight * P / share. */
                int64_t u = L->tenant[h];
                double charge = L->input_weight * (double)prompt[h] / L->shares[u];
                if (L->policy == POLICY_VTC) {
                    L->counter[u] += charge;
                    vtc_charged(L, u);
                }
                if (L->fair) {
                    L->fair_service[u] += charge;
                    L->fair_changed[u] = 1;
                }
            }
            free -= need;
            blocks[h] = need;
            budget -= n;
            round_take(L, G, &R, h, n, t);
        }
    }
    G->free_blocks = free;
    if (!R.count) { /* nothing scheduled: idle (a lone self-preemption is not logged) */
        G->end = INFINITY;
        return 0;
    }
    /* 3. IterationCost: exact integer work, each divided once by its rate. */
    wide_t moved = (wide_t)L->weight_bytes + (wide_t)L->kv_bytes_per_token * R.context;
    wide_t flops = (wide_t)L->matmul_flops_per_token * R.new_tokens +
                   (wide_t)L->attention_flops_per_pair * R.pairs;
    double memory_s = (double)moved / L->bandwidth;
    double compute_s = (double)flops / L->flop_rate;
    double duration = L->overhead_s + (compute_s > memory_s ? compute_s : memory_s);
    int64_t blocks_used = L->total_blocks - free;
    L->it_count++;
    L->it_requests += R.count;
    L->it_tokens += (int64_t)R.new_tokens;
    L->busy[g] += duration;
    L->moved_total += moved;
    L->flops_total += flops;
    L->block_seconds += (double)blocks_used * duration;
    if (L->keep) {
        if (L->log_len == L->log_cap) {
            int64_t cap = L->log_cap ? 2 * L->log_cap : 1024;
            ContinuousIteration *log = realloc(L->log, sizeof(ContinuousIteration) * (size_t)cap);
            if (!log) return -1;
            L->log = log;
            L->log_cap = cap;
        }
        ContinuousIteration row = {g, t, duration, R.count, (int64_t)R.new_tokens - R.decode,
                                   R.decode, blocks_used, R.preempted};
        L->log[L->log_len++] = row;
    }
    G->end = t + duration;
    return 0;
}

/* End of GPU g's iteration at t (ContinuousBatcher.complete and _Loop._complete): c += n; at
 * c = P + g a token (g += 1; VTC charges output_weight / share); at g = O the request finishes
 * and frees its blocks. */
static void gpu_complete(Loop *L, int64_t g, double t) {
    Gpu *G = &L->gpu[g];
    int64_t finished = 0;
    for (int64_t j = 0; j < G->sched_len; j++) {
        int64_t h = G->sched_h[j];
        int64_t c = L->computed[h] + G->sched_n[j];
        L->computed[h] = c;
        if (c != L->prompt[h] + L->generated[h]) continue;
        L->generated[h]++;
        if (L->policy == POLICY_VTC) {
            int64_t u = L->tenant[h];
            L->counter[u] += L->out_charge[u];
            vtc_charged(L, u);
        }
        if (L->fair) {
            int64_t u = L->tenant[h];
            L->fair_service[u] += L->out_charge[u];
            L->fair_changed[u] = 1;
        }
        int64_t row = L->row[h];
        double previous = L->last_token[h];
        if (previous != previous) { /* NaN: the first token */
            L->first[row] = t;
        } else {
            double gap = t - previous;
            if (!(gap <= L->max_tbt[row])) L->max_tbt[row] = gap; /* also replaces the NaN */
        }
        L->last_token[h] = t;
        if (L->generated[h] == L->output[h]) {
            L->finish[row] = t;
            L->finish_gpu[row] = (int32_t)g;
            finished++;
        }
    }
    G->sched_len = 0;
    if (finished) { /* drop them from the running list, order kept, and free their blocks */
        int64_t kept = 0;
        for (int64_t j = 0; j < G->len; j++) {
            int64_t h = G->running[j];
            if (L->generated[h] == L->output[h]) {
                G->free_blocks += L->blocks[h];
                L->blocks[h] = 0;
            } else {
                G->running[kept++] = h;
            }
        }
        G->len = kept;
    }
    if (t > L->last_end) L->last_end = t;
    G->end = INFINITY;
}

static void loop_free(Loop *L) {
    if (L->gpu) {
        for (int64_t g = 0; g < L->gpus; g++) {
            free(L->gpu[g].running);
            free(L->gpu[g].sched_h);
            free(L->gpu[g].sched_n);
        }
    }
    if (L->queue) {
        for (int64_t u = 0; u < L->tenants; u++) free(L->queue[u].items);
    }
    free(L->gpu);
    free(L->queue);
    free(L->counter);
    free(L->theap);
    free(L->tpos);
    free(L->wheap);
    free(L->computed);
    free(L->generated);
    free(L->blocks);
    free(L->last_token);
    free(L->admitted_once);
    free(L->out_charge);
    free(L->fair_service);
    free(L->fair_backlogged);
    free(L->fair_baseline);
    free(L->fair_changed);
    free(L->fair_waiting);
}

/*
 * Runs the continuous engine on the admitted candidates (columns of length `count`, in
 * (arrival_s, row) order; `rank` is the priority order, any increasing column otherwise).
 *
 * Admission in the loop (only when max_queue >= 0, i.e. max_queue_length is set): a full
 * *waiting* queue -> queue_full; else the tenant's token bucket (rate, burst, tokens, last; the
 * last two updated in place), charged P + O -> rate_limited. status[k] gets 0, 1 or 5.
 *
 * Outputs by trace row (n_rows; this function writes the defaults: NaN, 0, -1): start, first,
 * finish, preemptions, max_tbt, finish_gpu. totals = {iterations, requests, tokens};
 * wide = {bytes lo, bytes hi, flops lo, flops hi} (unsigned 128-bit halves); busy[gpus];
 * float_totals = {block_seconds, last_end, service difference (with track_fairness: the
 * largest difference of service between two backlogged tenants, ServiceDifference's measure)}.
 * With keep_iterations, *log gets a malloc'ed array of
 * *log_len ContinuousIteration rows (NULL when empty), to be released with
 * apslab_free_continuous_log. Returns 0, or -1 when memory ran out. The limits must pass
 * apslab.core.continuous_batcher.check_limits (the caller checks them).
 */
int64_t apslab_run_continuous(
    int64_t count, const double *arrival, const int64_t *row, const int64_t *prompt,
    const int64_t *output, const int64_t *tenant, const int64_t *rank, int64_t n_rows,
    int64_t gpus, int64_t total_blocks, int64_t block_size, int64_t max_num_seqs,
    int64_t max_num_batched_tokens, double window_s, int64_t policy, int64_t tenants,
    const double *shares, double input_weight, double output_weight, int64_t weight_bytes,
    int64_t kv_bytes_per_token, int64_t matmul_flops_per_token,
    int64_t attention_flops_per_pair, double bandwidth, double flop_rate, double overhead_s,
    int64_t max_queue, const double *bucket_rate, const double *bucket_burst,
    double *bucket_tokens, double *bucket_last, double *start, double *first, double *finish,
    int64_t *preemptions, double *max_tbt, int32_t *finish_gpu, uint8_t *status,
    int64_t *totals, uint64_t *wide, double *busy, double *float_totals,
    int64_t track_fairness, int64_t keep_iterations, ContinuousIteration **log,
    int64_t *log_len) {
    *log = NULL;
    *log_len = 0;
    Loop L;
    memset(&L, 0, sizeof L);
    L.count = count;
    L.row = row;
    L.prompt = prompt;
    L.output = output;
    L.tenant = tenant;
    L.rank = rank;
    L.gpus = gpus;
    L.total_blocks = total_blocks;
    L.block_size = block_size;
    L.max_num_seqs = max_num_seqs;
    L.max_tokens = max_num_batched_tokens;
    L.policy = policy;
    L.weight_bytes = weight_bytes;
    L.kv_bytes_per_token = kv_bytes_per_token;
    L.matmul_flops_per_token = matmul_flops_per_token;
    L.attention_flops_per_pair = attention_flops_per_pair;
    L.bandwidth = bandwidth;
    L.flop_rate = flop_rate;
    L.overhead_s = overhead_s;
    L.tenants = tenants;
    L.shares = shares;
    L.input_weight = input_weight;
    L.output_weight = output_weight;
    L.start = start;
    L.first = first;
    L.finish = finish;
    L.max_tbt = max_tbt;
    L.preemptions = preemptions;
    L.finish_gpu = finish_gpu;
    L.busy = busy;
    L.last_end = -INFINITY;
    L.keep = keep_iterations != 0;

    size_t n = (size_t)(count > 0 ? count : 1);
    L.gpu = calloc((size_t)gpus, sizeof(Gpu));
    L.computed = calloc(n, sizeof(int64_t));
    L.generated = calloc(n, sizeof(int64_t));
    L.blocks = calloc(n, sizeof(int64_t));
    L.last_token = malloc(n * sizeof(double));
    L.admitted_once = calloc(n, 1);
    int ok = L.gpu && L.computed && L.generated && L.blocks && L.last_token && L.admitted_once;
    if (ok && (policy == POLICY_VTC || track_fairness)) {
        L.out_charge = malloc((size_t)(tenants > 0 ? tenants : 1) * sizeof(double));
        ok = L.out_charge != NULL;
        for (int64_t u = 0; ok && u < tenants; u++) L.out_charge[u] = output_weight / shares[u];
    }
    if (ok && policy == POLICY_VTC) {
        size_t t = (size_t)(tenants > 0 ? tenants : 1);
        L.counter = calloc(t, sizeof(double));
        L.queue = calloc(t, sizeof(HandleHeap));
        L.theap = malloc(t * sizeof(int64_t));
        L.tpos = malloc(t * sizeof(int64_t));
        ok = L.counter && L.queue && L.theap && L.tpos;
        for (int64_t u = 0; ok && u < tenants; u++) L.tpos[u] = -1;
    } else if (ok) {
        L.wheap = malloc(n * sizeof(Waiting)); /* a request waits at most once at a time */
        ok = L.wheap != NULL;
    }
    if (ok && track_fairness) ok = fair_alloc(&L) == 0;
    if (!ok) {
        loop_free(&L);
        return -1;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        start[r] = first[r] = finish[r] = max_tbt[r] = NAN;
        preemptions[r] = 0;
        finish_gpu[r] = -1;
    }
    for (int64_t g = 0; g < gpus; g++) {
        L.gpu[g].free_blocks = total_blocks;
        L.gpu[g].end = INFINITY;
        busy[g] = 0.0;
    }

    int64_t idle = gpus, k = 0;
    double timer = INFINITY;
    int failed = 0;
    for (;;) {
        /* t = min(min(ends), timer): the first minimal end, unless the timer is earlier. */
        double t = L.gpu[0].end;
        for (int64_t g = 1; g < gpus; g++)
            if (L.gpu[g].end < t) t = L.gpu[g].end;
        if (timer < t) t = timer;
        /* Arrivals first, up to and including t (t moves earlier when a timer is armed). */
        while (k < count && arrival[k] <= t) {
            double a = arrival[k];
            if (max_queue >= 0) {
                if (waiting_len(&L) >= max_queue) {
                    status[k++] = STATUS_QUEUE_FULL;
                    continue;
                }
                /* TokenBucket.consume(P + O, a) */
                int64_t u = tenant[k];
                if (!bucket_step(&bucket_tokens[u], &bucket_last[u], a, bucket_rate[u],
                                 bucket_burst[u], (double)(prompt[k] + output[k]))) {
                    status[k++] = STATUS_RATE_LIMITED;
                    continue;
                }
            }
            status[k] = STATUS_ADMITTED;
            L.last_token[k] = NAN;
            if (waiting_push(&L, k) < 0) {
                failed = 1;
                break;
            }
            k++;
            /* Admitted while a GPU idles and no timer is armed: arm one a window later. */
            if (timer == INFINITY && idle > 0) {
                timer = a + window_s;
                if (timer < t) t = timer;
            }
        }
        if (failed) break;
        if (t == INFINITY) break;
        /* Every iteration ending at t completes (GPU index order), then every idle GPU runs a
         * round (index order), then the timer is disarmed. */
        for (int64_t g = 0; g < gpus; g++) {
            if (L.gpu[g].end == t) {
                gpu_complete(&L, g, t);
                idle++;
            }
        }
        for (int64_t g = 0; g < gpus && !failed; g++) {
            if (L.gpu[g].end == INFINITY) {
                if (gpu_round(&L, g, t) < 0) failed = 1;
                else if (L.gpu[g].end != INFINITY) idle--;
            }
        }
        if (failed) break;
        fair_settle(&L);
        timer = INFINITY;
    }
    if (failed) {
        free(L.log);
        loop_free(&L);
        return -1;
    }
    totals[0] = L.it_count;
    totals[1] = L.it_requests;
    totals[2] = L.it_tokens;
    wide[0] = (uint64_t)L.moved_total;
    wide[1] = (uint64_t)((uwide_t)L.moved_total >> 64);
    wide[2] = (uint64_t)L.flops_total;
    wide[3] = (uint64_t)((uwide_t)L.flops_total >> 64);
    float_totals[0] = L.block_seconds;
    float_totals[1] = L.last_end;
    float_totals[2] = L.fair_max;
    if (L.keep && L.log_len) {
        *log = L.log;
        *log_len = L.log_len;
    } else {
        free(L.log);
    }
    loop_free(&L);
    return 0;
}

/* Releases the iteration log apslab_run_continuous returned. */
void apslab_free_continuous_log(ContinuousIteration *log) { free(log); }

/* The service difference of a static run, replayed from its events
 * (apslab.sim.summary.static_service_difference, which gives the order): kind 0 is an arrival
 * (the tenant gains a waiting request), kind 1 a formation (it loses one and receives
 * increment[e] of service). Pairs are evaluated at the end of each instant, as in
 * ServiceDifference.settle. Returns the largest difference, or -1 when memory ran out. */
double apslab_replay_service_difference(int64_t events, const double *time, const uint8_t *kind,
                                        const int64_t *tenant, const double *increment,
                                        int64_t tenants) {
    Loop L;
    memset(&L, 0, sizeof L);
    L.tenants = tenants;
    double result = -1.0;
    if (fair_alloc(&L) == 0) {
        double previous = 0.0;
        for (int64_t e = 0; e < events; e++) {
            if (e && time[e] != previous) fair_settle(&L);
            previous = time[e];
            int64_t u = tenant[e];
            if (kind[e] == 0) {
                if (L.fair_waiting[u]++ == 0) fair_backlog(&L, u, 1);
            } else {
                if (--L.fair_waiting[u] == 0) fair_backlog(&L, u, 0);
                L.fair_service[u] += increment[e];
                L.fair_changed[u] = 1;
            }
        }
        fair_settle(&L);
        result = L.fair_max;
    }
    loop_free(&L); /* only the tracker's arrays are set */
    return result;
}

/* Lets the build tools treat this file as an extension module; apslab loads it with ctypes
 * and never imports it, so this is never called. */
void *PyInit__eventloop(void) { return 0; }
