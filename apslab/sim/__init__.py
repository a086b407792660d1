"""The virtual-time engines, their result type and its writers (REQUESTS.csv, SUMMARY.json).

:mod:`~apslab.sim.static` is the seed's engine (static micro-batches); the optional compiled loop
(``_eventloop.c``, loaded by :mod:`~apslab.sim._compiled`) runs the same rules bit-identically.
Imports :mod:`apslab.core` and :mod:`apslab.io`.
"""
