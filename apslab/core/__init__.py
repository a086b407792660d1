"""The request path's components, pure and clock-free.

limiter (token buckets and admission) -> aging_queue (lazy-aging priority queue) -> batcher
(KV-bounded micro-batches) -> gpu (the seed's sqrt model) and roofline (the cost model of the
continuous engine) -> metrics. Every component takes the time as an argument and never reads a
clock, so the simulator, the notebooks and the live service share the same objects. Nothing here
imports any other part of apslab.
"""
