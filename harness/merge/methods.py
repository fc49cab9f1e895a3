"""The merge methods, defined on each adapted module's exact update dW_i = scale_i * B_i @ A_i.

Nothing here averages A and B separately: that would add the cross terms
B_i @ A_j (i != j) that PEFT's ``add_weighted_adapter`` linear/TIES/DARE types
carry. Every function takes the inputs of ONE module, so a merge never holds
more than one module's dense updates at a time.

Two kinds of result:

* a *combination* ``sum_i c_i dW_i`` (linear, task arithmetic, SLERP, Model
  Stock, CAT): only the coefficients are computed here, from the Gram matrix
  ``<dW_i, dW_j>_F`` that the low-rank factors give cheaply, so the result stays
  exactly representable as a LoRA of rank ``sum_i r_i``;
* a *dense* update (TIES, DARE): element-wise trims and drops destroy the
  low-rank structure, so the merged dW is a full matrix.

Definitions follow mergekit (arcee-ai/mergekit): ``merge_methods/slerp.py``,
``sparsify.py`` and ``generalized_task_arithmetic.py``, ``model_stock.py``.
SLERP is applied to the task vectors dW_i, not to the full weights W0 + dW_i:
for two fine-tunes of one base, W0 dominates both, their normalised dot product
is ~1, and mergekit's own colinearity guard (|d| > 0.9995) turns SLERP of full
weights into plain linear interpolation. On the task vectors the angle is the
one between what the two adapters learned, and the result is still a
combination of the inputs (so the merged adapter can stay exact).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

from ..registry.lora import layer_of

DOT_THRESHOLD = 0.9995  # mergekit's: above it the two vectors count as colinear -> lerp
EPS = 1e-8


@dataclass
class LoraModule:
    """One adapted module across the inputs: dW_i = scale[i] * B[i] @ A[i]."""

    name: str
    A: list[torch.Tensor]  # (r_i, in)
    B: list[torch.Tensor]  # (out, r_i)
    scale: list[float]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B[0].shape[0], self.A[0].shape[1])

    def delta(self, i: int, dtype=torch.float32) -> torch.Tensor:
        return (self.B[i].to(dtype) @ self.A[i].to(dtype)) * self.scale[i]

    def gram(self) -> torch.Tensor:
        """G[i, j] = <dW_i, dW_j>_F = s_i s_j sum((B_i^T B_j) * (A_i A_j^T)): O(r^2 (in + out)), no dense dW."""
        n = len(self.A)
        g = torch.zeros(n, n, dtype=torch.float64)
        A = [a.double() for a in self.A]
        B = [b.double() for b in self.B]
        for i in range(n):
            for j in range(i, n):
                v = ((B[i].T @ B[j]) * (A[i] @ A[j].T)).sum() * self.scale[i] * self.scale[j]
                g[i, j] = g[j, i] = v
        return g


@dataclass
class Merged:
    """A module's merge result: coefficients of a combination, or a dense update."""

    coeffs: list[float] | None = None
    dense: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- combinations


def linear_coefficients(weights: list[float], normalize: bool, lam: float) -> list[float]:
    """Task arithmetic: lambda * sum_i w_i dW_i, divided by sum_i w_i when normalising (mergekit)."""
    total = sum(weights)
    div = total if normalize and abs(total) >= 1e-8 else 1.0
    return [lam * w / div for w in weights]


def slerp_coefficients(t: float, gram: torch.Tensor) -> tuple[float, float, bool]:
    """mergekit's slerp(t, v0, v1) as coefficients on the unnormalised inputs: out = c0 v0 + c1 v1.

    Norms and the dot product come from the Gram matrix; a zero vector is left
    unnormalised exactly as mergekit's ``normalize`` does. Returns (c0, c1, lerped).
    """
    n0, n1 = math.sqrt(max(float(gram[0, 0]), 0.0)), math.sqrt(max(float(gram[1, 1]), 0.0))
    u0 = n0 if n0 > EPS else 1.0
    u1 = n1 if n1 > EPS else 1.0
    dot = float(gram[0, 1]) / (u0 * u1)
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t, True
    theta0 = math.acos(max(-1.0, min(1.0, dot)))
    s = math.sin(theta0)
    return math.sin(theta0 - theta0 * t) / s, math.sin(theta0 * t) / s, False


def model_stock_coefficients(gram: torch.Tensor) -> tuple[list[float], float, float]:
    """Model Stock on task vectors: W0 + t * mean_i dW_i, t = N cos / (1 + (N - 1) cos).

    cos is the mean pairwise cosine of the dW_i (mergekit: cosines of the offsets
    from the base, whole tensor, norms clamped at 1e-6). The paper derives t for
    angles up to 90 degrees; a negative mean cosine is clamped to 0 (t = 0: the
    base), where mergekit would extrapolate. Returns (coefficients, t, cos).
    """
    n = gram.shape[0]
    norms = gram.diagonal().clamp(min=0).sqrt()
    cos = []
    for i in range(n):
        for j in range(i + 1, n):
            cos.append(float((gram[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)))
    c = max(0.0, sum(cos) / len(cos))
    t = n * c / (1 + (n - 1) * c)
    return [t / n] * n, t, sum(cos) / len(cos)


# ---------------------------------------------------------------- sparsification (TIES / DARE)


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ``int(density * numel)`` entries by magnitude (mergekit ``magnitude``, no rescale)."""
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    if k <= 0:
        raise ValueError(f"density {density} keeps no entry of a {tuple(delta.shape)} update")
    flat = delta.reshape(-1)
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.view_as(delta)


def dare_generator(seed: int, module: str, index: int) -> torch.Generator:
    """The seeded random stream for input ``index`` of ``module``: independent of module order."""
    digest = hashlib.sha256(f"{seed}/{module}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def dare_mask(shape, density: float, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli(density) keep-mask (DARE: drop with probability p = 1 - density): U(0, 1) < density,
    a third of the cost of torch.bernoulli on a full tensor of probabilities."""
    return (torch.rand(tuple(shape), generator=generator) < density).float()


def dare_drop(delta: torch.Tensor, mask: torch.Tensor, density: float, rescale: str) -> torch.Tensor:
    """Drop with ``mask`` and rescale: ``density`` divides by the keep probability (the DARE
    paper's 1/(1 - p), PEFT's choice: unbiased in expectation); ``l1`` matches the L1 norm
    of the original (mergekit's); ``none`` keeps the survivors as they are."""
    if density >= 1:
        return delta
    masked = delta * mask
    if rescale == "density":
        return masked / density
    if rescale == "l1":
        before, after = delta.abs().sum(), masked.abs().sum()
        if before < 1e-7 or after < 1e-7:
            return masked
        return masked * (before / after)
    return masked


def consensus_sum(deltas: list[torch.Tensor], weights: list[float], normalize: bool, lam: float, elect: bool) -> torch.Tensor:
    """mergekit's generalized task arithmetic after sparsification.

    With ``elect`` (TIES): majority sign s = sign(sum_i w_i d_i) (ties go to +),
    keep entries whose own sign equals s (zeros never agree), sum w_i d_i over
    them and, when normalising, divide by the sum of the agreeing weights
    (the disjoint mean; 1 where nothing agrees). Without it: weighted sum,
    divided by sum_i w_i when normalising.
    """
    out = torch.zeros_like(deltas[0])
    if elect:
        total = torch.zeros_like(deltas[0])
        for d, w in zip(deltas, weights):
            total.add_(d, alpha=w)
        majority = torch.where(total >= 0, 1.0, -1.0).to(deltas[0].dtype)
        del total
        divisor = torch.zeros_like(deltas[0])
        for d, w in zip(deltas, weights):
            agree = (torch.sign(d * w) == majority).to(d.dtype)
            out.add_(d * agree, alpha=w)
            divisor.add_(agree, alpha=w)
        if normalize:
            divisor[divisor == 0] = 1
            out.div_(divisor)
    else:
        for d, w in zip(deltas, weights):
            out.add_(d, alpha=w)
        if normalize:
            s = sum(weights)
            out.div_(s if abs(s) >= 1e-8 else 1.0)
    if lam != 1:
        out.mul_(lam)
    return out


# ---------------------------------------------------------------- t over depth


def evaluate_t(setting, module: str, depth: float) -> float:
    """mergekit's ``evaluate_setting``: a number; a list interpolated piecewise-linearly over
    depth in [0, 1]; or a list of {filter, value} where the first filter that is a
    substring of the module name (or has no filter / '*') decides."""
    if isinstance(setting, (int, float)):
        return float(setting)
    if setting and all(isinstance(x, (int, float)) for x in setting):
        scaled = depth * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        f = cond.filter
        if f is None or f == "*" or f in module:
            return evaluate_t(cond.value, module, depth)
    raise ValueError(f"no t applies to module {module}")


def depth_of(module: str, n_layers: int) -> float:
    """mergekit's t for layer idx of L: idx / (L - 1) (1 when there is a single layer); 0 outside layers."""
    idx = layer_of(module)
    if idx is None:
        return 0.0
    return idx / (n_layers - 1) if n_layers > 1 else 1.0


# ---------------------------------------------------------------- one module


@dataclass(frozen=True)
class MethodParams:
    method: str
    weights: list[float] | None = None
    normalize: bool = False
    lam: float = 1.0
    t: object = None
    density: float | None = None
    rescale: str = "density"
    seed: int = 0
    n_layers: int = 1


def merge_module(mod: LoraModule, p: MethodParams) -> Merged:
    """Merge one module's inputs by ``p.method``."""
    m = p.method
    if m in ("linear", "task_arithmetic", "cat"):
        return Merged(coeffs=linear_coefficients(p.weights, p.normalize, p.lam))
    if m == "slerp":
        t = evaluate_t(p.t, mod.name, depth_of(mod.name, p.n_layers))
        c0, c1, lerped = slerp_coefficients(t, mod.gram())
        return Merged(coeffs=[c0, c1], info={"t": t, "lerp": lerped})
    if m == "model_stock":
        coeffs, t, cos = model_stock_coefficients(mod.gram())
        return Merged(coeffs=coeffs, info={"t": t, "cos": cos})
    if m in ("ties", "dare_linear", "dare_ties"):
        deltas = []
        for i in range(len(mod.A)):
            d = mod.delta(i)
            if m == "ties":
                d = magnitude_trim(d, p.density)
            else:
                d = dare_drop(d, dare_mask(d.shape, p.density, dare_generator(p.seed, mod.name, i)), p.density, p.rescale)
            deltas.append(d)
        return Merged(dense=consensus_sum(deltas, p.weights, p.normalize, p.lam, elect=m != "dare_linear"))
    raise ValueError(f"unknown merge method {m}")


def combine(mod: LoraModule, coeffs: list[float], dtype=torch.float32) -> torch.Tensor:
    """sum_i c_i dW_i as a dense matrix (for model outputs)."""
    out = torch.zeros(mod.shape, dtype=dtype)
    for i, c in enumerate(coeffs):
        if c != 0:
            out.addmm_(mod.B[i].to(dtype), mod.A[i].to(dtype), alpha=c * mod.scale[i])
    return out


# ---------------------------------------------------------------- back to LoRA factors


def stack_exact(mod: LoraModule, coeffs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The combination as one LoRA with scale 1: B = [c_i s_i B_i], A = [A_i] stacked (rank sum)."""
    B = torch.cat([mod.B[i].float() * (c * mod.scale[i]) for i, c in enumerate(coeffs)], dim=1)
    A = torch.cat([a.float() for a in mod.A], dim=0)
    return B.contiguous(), A.contiguous()


# A merged adapter that claims to be exact holds its method's update to this relative error (fp32 factors of a
# float64 combination measure ~1e-7); anything above it is a truncation or a corrupted manifest, never "exact".
EXACT_TOLERANCE = 1e-5


def factored_error(mod: LoraModule, coeffs: list[float], B: torch.Tensor, A: torch.Tensor) -> tuple[float, float]:
    """(||B A - sum_i c_i dW_i||_F, ||sum_i c_i dW_i||_F) in float64 without forming a dense matrix:
    the difference is itself a product X Y of stacked factors, and ||X Y||^2 = sum((X^T X) * (Y Y^T))."""
    X = torch.cat([B.double()] + [mod.B[i].double() * (-c * mod.scale[i]) for i, c in enumerate(coeffs)], dim=1)
    Y = torch.cat([A.double()] + [a.double() for a in mod.A], dim=0)
    diff = float(((X.T @ X) * (Y @ Y.T)).sum())
    c = torch.tensor(coeffs, dtype=torch.float64)
    total = float(c @ mod.gram() @ c)
    return math.sqrt(max(diff, 0.0)), math.sqrt(max(total, 0.0))


def _split(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    k = min(rank, S.numel())
    total = float((S.double() ** 2).sum())
    err = math.sqrt(float((S[k:].double() ** 2).sum()) / total) if total > 0 else 0.0
    root = S[:k].sqrt()
    B = U[:, :k] * root
    A = root[:, None] * Vh[:k]
    if k < rank:  # fewer non-trivial directions than asked for: pad with zeros (still exact)
        B = torch.cat([B, B.new_zeros(B.shape[0], rank - k)], dim=1)
        A = torch.cat([A, A.new_zeros(rank - k, A.shape[1])], dim=0)
    return B.float().contiguous(), A.float().contiguous(), err


def refactor_combination(mod: LoraModule, coeffs: list[float], rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Truncated SVD of sum_i c_i dW_i without forming it: QR of the stacked factors, SVD of the
    small core. Returns (B, A, relative Frobenius error ||dW_hat - dW|| / ||dW||)."""
    B, A = stack_exact(mod, coeffs)
    if not (torch.isfinite(B).all() and torch.isfinite(A).all()):
        raise ValueError("the weighted factors overflow (not finite) before the SVD")
    qb, rb = torch.linalg.qr(B.double())
    qa, ra = torch.linalg.qr(A.double().T)
    U, S, Vh = torch.linalg.svd(rb @ ra.T)
    return _split(qb @ U, S, Vh @ qa.T, rank)


def randomized_svd(M: torch.Tensor, k: int, oversample: int = 10, power_iters: int = 4, seed: int = 0):
    """Top-k SVD by a seeded randomized range finder with power iterations (Halko, Martinsson and
    Tropp 2011). On merged LoRA updates it reaches the optimal truncation error to ~1e-5 relative
    while a full SVD of a 2048 x 640 matrix costs seconds on 2 cores; seeded so a merge is
    reproducible bit for bit."""
    m, n = M.shape
    q = min(k + oversample, m, n)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(M @ torch.randn(n, q, generator=g, dtype=M.dtype))
    for _ in range(power_iters):
        Z, _ = torch.linalg.qr(M.T @ Q)
        Q, _ = torch.linalg.qr(M @ Z)
    U, S, Vh = torch.linalg.svd(Q.T @ M, full_matrices=False)
    return Q @ U, S, Vh


def refactor_dense(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Truncated SVD of a dense merged update: (B, A, relative Frobenius error ||B A - dW|| / ||dW||).

    Small matrices get an exact SVD; larger ones the seeded randomized SVD. The
    error is measured on the stored factors, not estimated."""
    M = delta.float()
    if not torch.isfinite(M).all():
        raise ValueError("the merged update overflows (not finite) before the SVD")
    if min(M.shape) <= 2 * (rank + 10):
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return _split(U, S, Vh, rank)
    U, S, Vh = randomized_svd(M, rank)
    B, A, _ = _split(U, S, Vh, rank)
    total = float(torch.linalg.norm(M))
    err = float(torch.linalg.norm(M - B @ A)) / total if total > 0 else 0.0
    return B, A, err
