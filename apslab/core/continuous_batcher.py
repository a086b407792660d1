"""Continuous (iteration-level) batching with paged KV blocks, chunked prefill and preemption.

The vocabulary is vLLM v1's scheduler: one shared *waiting* queue; on each GPU a *running* list,
a token budget per iteration (``max_num_batched_tokens``), at most ``max_num_seqs`` running
requests, and KV blocks of ``block_size`` tokens. A request has P prompt and O output tokens,
``computed`` tokens c (its KV cache) and ``generated`` tokens g.

A scheduling round of one GPU (:meth:`ContinuousBatcher.schedule`):

1. *Running pass*, over the running list in order, while budget is left: a request computes
   ``n = min(P + g - c, budget left)`` tokens (1 when decoding; a chunk of its prompt, or of its
   recomputation after a preemption, otherwise) and needs ``ceil((c + n) / block_size) - held``
   new blocks. While that exceeds the free blocks, the *last* request of the running list is
   preempted: it frees its blocks, c = 0, and goes back to the waiting queue (g kept). If the
   victim is the request being scheduled, the pass ends.
2. *Waiting pass*, only if nothing was preempted: while requests wait, fewer than
   ``max_num_seqs`` run and budget is left, the next waiting request (by the policy, see
   :mod:`apslab.core.policies`) computes ``n = min(P + g, budget left)`` tokens and needs
   ``ceil(n / block_size)`` blocks; if they are not free the pass stops (no skipping ahead),
   else it joins the running list.

The round's iteration is then costed by the GPU model (:class:`apslab.core.roofline
.IterationCost`) and, when it ends (:meth:`ContinuousBatcher.complete`), every scheduled request
gets c += n; one whose c reaches P + g emits a token (g += 1), and one whose g reaches O finishes
and frees its blocks.

Nothing here reads a clock or knows about events: the simulator and the live service decide when
rounds happen and pass the time along. Request state is kept in plain lists indexed by a dense
handle, not an object per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .kv_blocks import blocks_for


def check_limits(*, gpus: int, total_blocks: int, block_size: int, max_num_seqs: int,
                 max_num_batched_tokens: int) -> None:
    """ValueError unless rounds can run: the batcher's check, and the compiled loop's (which
    is given only limits that pass it)."""
    if min(gpus, block_size, max_num_seqs, max_num_batched_tokens) < 1 or total_blocks < 0:
        raise ValueError("gpus, block_size, max_num_seqs and max_num_batched_tokens must be "
                         ">= 1 and total_blocks >= 0")


@dataclass
class Iteration:
    """What one round scheduled on one GPU, and the sums its cost is computed from."""

    gpu: int
    handles: list[int]
    tokens: list[int]  # n per scheduled request
    preempted: list[int]  # handles preempted in this round
    blocks_used: int  # blocks held on the GPU once scheduled
    context_tokens: int = 0  # sum(c + n)
    new_tokens: int = 0  # sum(n)
    attention_pairs: int = 0  # sum(n*c + n*(n+1)/2)
    decode_tokens: int = 0  # scheduled requests computing their latest generated token
    admitted: list[int] = field(default_factory=list)  # joined from the waiting queue, in order
    newly_started: list[int] = field(default_factory=list)  # first iteration of these requests

    @property
    def prefill_tokens(self) -> int:
        """Prompt (and recomputation) tokens: every scheduled token that is not a decode."""
        return self.new_tokens - self.decode_tokens


@dataclass
class Completion:
    """What the end of an iteration produced."""

    emitted: list[int]  # handles that emitted a token
    finished: list[int]  # handles that emitted their last token (a subset of emitted)


class ContinuousBatcher:
    """Iteration-level scheduling over one shared waiting queue and every GPU's running list."""

    def __init__(self, *, gpus: int, total_blocks: int, block_size: int, max_num_seqs: int,
                 max_num_batched_tokens: int, policy, observer=None) -> None:
        """``observer`` (optional, e.g. :class:`apslab.core.fairness.ServiceDifference`) is told
        of service (``admitted(tenant, P)``, ``emitted(tenant)``) and of tenants starting and
        stopping to have waiting requests (``backlog(tenant, flag)``)."""
        check_limits(gpus=gpus, total_blocks=total_blocks, block_size=block_size,
                     max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
        self.block_size = block_size
        self.total_blocks = total_blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.policy = policy
        self.running: list[list[int]] = [[] for _ in range(gpus)]
        self.free_blocks = [total_blocks] * gpus
        self.in_flight: list[Iteration | None] = [None] * gpus
        # Per-request columns, indexed by handle.
        self.prompt: list[int] = []
        self.output: list[int] = []
        self.computed: list[int] = []
        self.generated: list[int] = []
        self.blocks: list[int] = []
        self.preemptions: list[int] = []
        self.admitted_once: list[bool] = []
        self.tenant: list[int] = []
        self.observer = observer
        self.waiting_by_tenant: dict[int, int] = {}

    # -- requests ------------------------------------------------------------------------------

    def add(self, prompt_tokens: int, output_tokens: int, *, neg_key: float = 0.0,
            arrival_s: float = 0.0, request_id: int = 0, tenant: int = 0) -> int:
        """Admit a request into the waiting queue; returns its handle.

        ``neg_key`` is ``-(bid - aging_per_s * arrival_s)``, the priority policy's first field.
        """
        if prompt_tokens < 1 or output_tokens < 1:
            raise ValueError("continuous batching needs prompt_tokens >= 1 and output_tokens >= 1")
        handle = len(self.prompt)
        self.prompt.append(prompt_tokens)
        self.output.append(output_tokens)
        self.computed.append(0)
        self.generated.append(0)
        self.blocks.append(0)
        self.preemptions.append(0)
        self.admitted_once.append(False)
        self.tenant.append(tenant)
        self.policy.add(handle, neg_key=neg_key, arrival_s=arrival_s, request_id=request_id,
                        tenant=tenant)
        self._to_waiting(handle)
        return handle

    def _to_waiting(self, handle: int) -> None:
        self.policy.push(handle)
        if self.observer is not None:
            tenant = self.tenant[handle]
            count = self.waiting_by_tenant.get(tenant, 0)
            self.waiting_by_tenant[tenant] = count + 1
            if not count:
                self.observer.backlog(tenant, True)

    def _from_waiting(self) -> int:
        handle = self.policy.pop()
        if self.observer is not None:
            tenant = self.tenant[handle]
            count = self.waiting_by_tenant[tenant] - 1
            self.waiting_by_tenant[tenant] = count
            if not count:
                self.observer.backlog(tenant, False)
        return handle

    @property
    def waiting(self) -> int:
        """How many requests wait (admitted or preempted, not running)."""
        return len(self.policy)

    def idle(self, gpu: int) -> bool:
        """Whether the GPU runs no iteration now."""
        return self.in_flight[gpu] is None

    # -- a round ---------------------------------------------------------------------------------

    def schedule(self, gpu: int) -> Iteration | None:
        """One scheduling round of ``gpu`` (see the module docstring); None if nothing runs.

        The returned iteration is the GPU's in-flight one until :meth:`complete`.
        """
        prompt, computed, generated, blocks = (
            self.prompt, self.computed, self.generated, self.blocks)
        policy = self.policy
        block_size = self.block_size
        running = self.running[gpu]
        free = self.free_blocks[gpu]
        budget = self.max_num_batched_tokens
        handles: list[int] = []
        tokens: list[int] = []
        preempted: list[int] = []
        i = 0
        while i < len(running) and budget > 0:
            handle = running[i]
            c = computed[handle]
            n = min(prompt[handle] + generated[handle] - c, budget)
            need = blocks_for(c + n, block_size) - blocks[handle]
            victim = -1
            while need > free:
                victim = running.pop()
                free += blocks[victim]
                blocks[victim] = 0
                computed[victim] = 0
                self.preemptions[victim] += 1
                preempted.append(victim)
                self._to_waiting(victim)
                if victim == handle:
                    break
            if victim == handle:
                break
            free -= need
            blocks[handle] += need
            budget -= n
            handles.append(handle)
            tokens.append(n)
            i += 1
        admitted: list[int] = []
        newly_started: list[int] = []
        if not preempted:
            max_seqs = self.max_num_seqs
            while len(policy) and len(running) < max_seqs and budget > 0:
                handle = policy.peek()
                n = min(prompt[handle] + generated[handle], budget)
                need = blocks_for(n, block_size)
                if need > free:
                    break
                self._from_waiting()
                policy.place(running, handle)
                if not self.admitted_once[handle]:  # first admission = first round scheduled
                    self.admitted_once[handle] = True
                    newly_started.append(handle)
                    policy.admitted(handle, prompt[handle])
                    if self.observer is not None:
                        self.observer.admitted(self.tenant[handle], prompt[handle])
                free -= need
                blocks[handle] = need
                budget -= n
                handles.append(handle)
                tokens.append(n)
                admitted.append(handle)
        self.free_blocks[gpu] = free
        if not handles:
            return None
        iteration = Iteration(gpu, handles, tokens, preempted, self.total_blocks - free,
                              admitted=admitted, newly_started=newly_started)
        context = new = pairs = decode = 0
        for handle, n in zip(handles, tokens, strict=True):
            c = computed[handle]
            context += c + n
            new += n
            pairs += n * c + n * (n + 1) // 2
            if n == 1 and generated[handle] and c == prompt[handle] + generated[handle] - 1:
                decode += 1
        iteration.context_tokens, iteration.new_tokens = context, new
        iteration.attention_pairs, iteration.decode_tokens = pairs, decode
        self.in_flight[gpu] = iteration
        return iteration

    def complete(self, gpu: int) -> Completion:
        """End ``gpu``'s in-flight iteration: advance its requests, emit tokens, finish some."""
        iteration = self.in_flight[gpu]
        if iteration is None:
            raise RuntimeError(f"GPU {gpu} has no iteration in flight")
        self.in_flight[gpu] = None
        prompt, output, computed, generated = (self.prompt, self.output, self.computed,
                                               self.generated)
        emitted: list[int] = []
        finished: list[int] = []
        for handle, n in zip(iteration.handles, iteration.tokens, strict=True):
            c = computed[handle] + n
            computed[handle] = c
            if c == prompt[handle] + generated[handle]:
                generated[handle] += 1
                emitted.append(handle)
                self.policy.emitted(handle)
                if self.observer is not None:
                    self.observer.emitted(self.tenant[handle])
                if generated[handle] == output[handle]:
                    finished.append(handle)
        if finished:
            done = set(finished)
            self.running[gpu] = [h for h in self.running[gpu] if h not in done]
            for handle in finished:
                self.free_blocks[gpu] += self.blocks[handle]
                self.blocks[handle] = 0
        return Completion(emitted, finished)
