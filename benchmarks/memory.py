"""Peak tensor memory on a CPU, counted as ``torch.cuda.max_memory_allocated`` counts it on a GPU.

A process's peak RSS mixes the tensors with everything else a process holds (libraries, the tokenizer, Python
objects, the file cache of a memory-mapped checkpoint), so two training loops that differ only in their
activations can show the same RSS. A GPU's allocator counts tensors alone. :class:`TensorPeak` does the same for
torch's CPU allocator: it runs the block under ``torch.profiler`` with ``profile_memory=True`` and adds up, from the
profiler's allocation events in time order, the bytes allocated inside the block and not yet freed; the peak is the
largest such sum. Tensors alive before the block are not counted, nor their frees (start it before the model loads).

It costs time (every allocation is an event), so a benchmark measures memory and speed in separate runs.
"""

from __future__ import annotations


class TensorPeak:
    """``with TensorPeak() as tp: ...`` then ``tp.peak_bytes``, ``tp.peak_at`` (the ops around the allocation that
    reached it, outermost first) and ``tp.allocations`` (the number of allocation events)."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.allocations = 0
        self.peak_at: list[str] = []  # the ops around the allocation that reached the peak, outermost first
        self._prof = None

    def __enter__(self) -> "TensorPeak":
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        from torch._C._profiler import _EventType

        prof = self._prof
        assert prof is not None
        prof.__exit__(*exc)
        if exc[0] is not None:
            return
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        events = []
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size, node))
        self.allocations = sum(1 for e in events if e[2] > 0)
        events.sort(key=lambda e: e[0])
        # a running sum of this block's own allocations: a free counts only for a block allocated inside it (the
        # allocator's own running total also carries blocks of earlier profiled windows, and stale sizes)
        live: dict[int, int] = {}
        total, top = 0, None
        for _, ptr, size, node in events:
            if size > 0:
                live[ptr] = size
                total += size
                if total > self.peak_bytes:
                    self.peak_bytes, top = total, node
            elif ptr in live:
                total -= live.pop(ptr)
        chain, up = [], top.parent if top is not None else None
        while up is not None:
            chain.append(up.name)
            up = up.parent
        self.peak_at = chain[::-1]
        self._prof = None

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
