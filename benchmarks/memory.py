"""Peak tensor memory on a CPU, counted as ``torch.cuda.max_memory_allocated`` counts it on a GPU.

A process's peak RSS mixes the tensors with everything else a process holds (libraries, the tokenizer, Python
objects, the file cache of a memory-mapped checkpoint), so two training loops that differ only in their
activations can show the same RSS. A GPU's allocator counts tensors alone. :class:`TensorPeak` does the same for
torch's CPU allocator: it runs the block under ``torch.profiler`` with ``profile_memory=True`` and reads, from the
profiler's allocation events, the running total of bytes allocated inside the block and not yet freed; the peak is
the largest such total. Tensors alive before the block are not counted (start it before the model loads).

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
            if node.tag == _EventType.Allocation:
                events.append((node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size, node))
        self.allocations = len(events)
        if not events:
            return
        events.sort(key=lambda e: e[0])
        # the allocator's running total also holds blocks that an earlier profiled block allocated and still holds:
        # count from what it held when this block began
        base = events[0][1] - events[0][2]
        top = max(events, key=lambda e: e[1])
        self.peak_bytes = top[1] - base
        chain, up = [], top[3].parent
        while up is not None:
            chain.append(up.name)
            up = up.parent
        self.peak_at = chain[::-1]
        self._prof = None

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
