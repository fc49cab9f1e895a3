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
    """``with TensorPeak() as tp: ...`` then ``tp.peak_bytes`` (and ``tp.allocations``, the number of events)."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.allocations = 0
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
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation:
                self.allocations += 1
                self.peak_bytes = max(self.peak_bytes, node.extra_fields.total_allocated)
        self._prof = None

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20
