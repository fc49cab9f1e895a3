"""Paired bootstrap speed: 10,000 resamples of 10,000 items, against a per-resample numpy loop (the textbook implementation).

Prints seconds for our vectorised paired bootstrap (binary metric: multinomial
shortcut; continuous metric: chunked index resampling) next to a plain
per-resample loop, and the ratio. Usage: python benchmarks/stats_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.stats import get_aggregation, paired_delta  # noqa: E402


def naive(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(a)
    out = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, n, n)
        out[r] = b[idx].mean() - a[idx].mean()
    return tuple(np.quantile(out, [0.025, 0.975]))


def main() -> None:
    n, R = 10_000, 10_000
    rng = np.random.default_rng(1)
    mean = get_aggregation("mean")
    cases = {
        "binary (accuracy)": ((rng.random(n) < 0.7).astype(float), None),
        "continuous (log-likelihood)": (rng.normal(size=n), None),
    }
    print(f"{'':30}{'ours s':>10}{'loop s':>14}{'speed-up':>10}")
    for name, (a, _) in cases.items():
        b = a.copy()
        flip = rng.random(n) < 0.05
        b[flip] = (1 - b[flip]) if name.startswith("binary") else b[flip] + rng.normal(size=flip.sum())
        t0 = time.perf_counter()
        d = paired_delta(a.tolist(), b.tolist(), mean, n_resamples=R, seed=0)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        lo, hi = naive(a, b, R)
        slow = time.perf_counter() - t0
        print(f"{name:30}{ours:>10.3f}{slow:>14.2f}{slow / ours:>9.0f}x   CI ours [{d.ci_low:+.4f}, {d.ci_high:+.4f}] loop [{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()
