"""The metric formulas on feature arrays: FID, KID, IS, and improved precision/recall.

Each function takes features (or logits) that were already extracted, so it can be checked against a
direct numpy computation and reused for any feature space. Libraries do the work where they serve: KID is
built on torchmetrics' ``poly_kernel`` and ``poly_mmd``, IS is torch-fidelity's ``isc_features_to_metric``;
FID is computed here through symmetric eigenproblems (same value, a fraction of the time, see below).
Precision/recall (Kynkäänniemi et al. 2019), which torchmetrics lacks and torch-fidelity swaps when its
inputs are swapped, is written here, tiled so 50,000 x 50,000 neighbourhoods never live in memory at once.

Arguments that compare two sets are keyword-only and named ``real`` and ``fake`` so they cannot be swapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor
from torch_fidelity.metric_isc import isc_features_to_metric
from torchmetrics.image.kid import poly_kernel, poly_mmd

# ----------------------------------------------------------------------------------------------- FID
# FID = ||mu_r - mu_f||^2 + Tr(S_r) + Tr(S_f) - 2 Tr((S_r S_f)^(1/2)). torch-fidelity and torchmetrics take
# the last trace from the eigenvalues of the non-symmetric product S_r S_f (~15 s at d = 2048 on 2 CPU cores).
# The same trace comes from symmetric eigenvalue problems here: Tr((A S_f A)^(1/2)) with A = S_r^(1/2)
# (A S_f A is similar to S_r S_f and PSD); and when the fake covariance comes from n <= d samples,
# S_f = Xc^T Xc / (n - 1) and the nonzero eigenvalues of S_r S_f are those of the n x n matrix
# Xc S_r Xc^T / (n - 1), so no square root is needed at all (the in-training case: n = 500, d = 2048).
# Checked against scipy's sqrtm formula (seed 000's appendix) in the tests.


def feature_statistics(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov``'s n - 1) of (n, d) features, in float64."""
    x = torch.as_tensor(features).double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need (n >= 2, d) features, got shape {tuple(x.shape)}")
    mu = x.mean(0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def psd_sqrt(sigma) -> Tensor:
    """The symmetric square root of a covariance matrix (float64; tiny negative eigenvalues clipped)."""
    s = np.asarray(sigma, dtype=np.float64)
    w, v = scipy.linalg.eigh((s + s.T) / 2, driver="evr")
    return torch.from_numpy((v * np.sqrt(np.clip(w, 0, None))) @ v.T)


def _trace_sqrt_psd(m: Tensor) -> float:
    m = m.cpu().numpy()
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def fid_from_statistics(*, real: tuple, fake: tuple, real_sqrt: Tensor | None = None) -> float:
    """FID from (mu, sigma) pairs; ``real_sqrt`` (``psd_sqrt(sigma_real)``) may be passed to reuse it."""
    mu_r, s_r = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in real)
    mu_f, s_f = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in fake)
    a = psd_sqrt(s_r) if real_sqrt is None else real_sqrt.double()
    tr_covmean = _trace_sqrt_psd(a @ s_f @ a)
    return float((mu_r - mu_f).pow(2).sum() + s_r.trace() + s_f.trace() - 2 * tr_covmean)


def fid_against_features(*, real: tuple, fake: Tensor, real_sqrt: Tensor | Callable[[], Tensor] | None = None,
                         ) -> float:
    """FID between real statistics (mu, sigma) and fake features (n, d). For n > d the real covariance's
    square root is needed: pass it (or a function returning it) to reuse it across calls."""
    x = torch.as_tensor(fake).double().cpu()
    n, d = x.shape
    if n > d:
        sqrt = real_sqrt() if callable(real_sqrt) else real_sqrt
        return fid_from_statistics(real=real, fake=feature_statistics(x), real_sqrt=sqrt)
    mu_r, s_r = (torch.as_tensor(np.asarray(v), dtype=torch.float64) for v in real)
    mu_f = x.mean(0)
    xc = x - mu_f
    tr_s_f = float(xc.pow(2).sum() / (n - 1))
    tr_covmean = _trace_sqrt_psd(xc @ s_r @ xc.T / (n - 1))
    return float((mu_r - mu_f).pow(2).sum() + s_r.trace() + tr_s_f - 2 * tr_covmean)


def fid(*, real: Tensor, fake: Tensor) -> float:
    """FID between two (n, d) feature arrays."""
    return fid_against_features(real=feature_statistics(real), fake=fake)


# ----------------------------------------------------------------------------------------------- KID


def kid_subset_indices(n_real: int, n_fake: int, subsets: int, subset_size: int,
                       seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """The (real, fake) index subsets KID averages over: ``subsets`` draws of ``subset_size`` without
    replacement, from a generator seeded with ``seed`` (so a KID can be recomputed exactly)."""
    g = torch.Generator().manual_seed(int(seed))
    return [(torch.randperm(n_real, generator=g)[:subset_size],
             torch.randperm(n_fake, generator=g)[:subset_size]) for _ in range(subsets)]


GRAM_LIMIT = 25_000_000  # kernel entries (200 MB in float64) up to which whole Gram matrices are precomputed


def kid(*, real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float, int]:
    """KID: the unbiased MMD^2 with the kernel (gamma x.y + coef0)^degree (gamma = 1/d by default),
    averaged over random subsets. Returns (mean, standard deviation over subsets (ddof 0, as torch-fidelity),
    the subset size used: ``subset_size`` capped at the smaller set, never above n).

    For small sets the whole Gram matrices are computed once and all subsets are summed at once with
    indicator matrices (the same sums, ~20x faster at n = 2,000); larger sets compute each subset's kernels
    afresh with torchmetrics' ``poly_mmd``.
    """
    n_real, n_fake = real.shape[0], fake.shape[0]
    size = min(int(subset_size), n_real, n_fake)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {n_real} real and {n_fake} fake")
    real, fake = real.double(), fake.double()
    index_sets = kid_subset_indices(n_real, n_fake, int(subsets), size, seed)
    values = []
    if n_real * n_real + n_fake * n_fake + n_real * n_fake <= GRAM_LIMIT:
        # every subset at once: with indicator columns m, the sum of a kernel block is m_r^T K m_f
        k_rr = poly_kernel(real, real, degree, gamma, coef0)
        k_ff = poly_kernel(fake, fake, degree, gamma, coef0)
        k_rf = poly_kernel(real, fake, degree, gamma, coef0)
        m_r = torch.zeros(n_real, len(index_sets), dtype=real.dtype, device=real.device)
        m_f = torch.zeros(n_fake, len(index_sets), dtype=real.dtype, device=real.device)
        for j, (idx_r, idx_f) in enumerate(index_sets):
            m_r[idx_r.to(real.device), j] = 1.0
            m_f[idx_f.to(real.device), j] = 1.0
        off_rr = (m_r * (k_rr @ m_r)).sum(0) - m_r.T @ k_rr.diagonal()
        off_ff = (m_f * (k_ff @ m_f)).sum(0) - m_f.T @ k_ff.diagonal()
        cross = (m_r * (k_rf @ m_f)).sum(0)
        values = list((off_rr + off_ff) / (size * (size - 1)) - 2 * cross / size**2)
    else:
        for idx_r, idx_f in index_sets:
            idx_r, idx_f = idx_r.to(real.device), idx_f.to(fake.device)
            values.append(poly_mmd(real[idx_r], fake[idx_f], degree=degree, gamma=gamma, coef=coef0))
    v = torch.stack(values).cpu()
    return float(v.mean()), float(v.std(unbiased=False)) if len(v) > 1 else 0.0, size


# ----------------------------------------------------------------------------------------------- IS


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of consecutive samples; (mean, std over splits).

    ``logits`` are pre-softmax class scores (for Inception-v3, torch-fidelity's ``logits_unbiased``).
    Samples are split in the order given (no shuffling): generate them i.i.d.
    """
    splits = max(1, min(int(splits), logits.shape[0]))
    out = isc_features_to_metric(logits.detach().cpu().float(), splits=splits, shuffle=False)
    return float(out["inception_score_mean"]), float(out["inception_score_std"])


# ------------------------------------------------------------------------------------ precision / recall


def _sq_dists(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0)


def knn_radii(x: Tensor, k: int = 3, block: int = 4096) -> Tensor:
    """Squared distance from each row of ``x`` to its k-th nearest other row (itself excluded).

    Runs over (block x block) tiles and keeps a running top-(k+1), so memory is O(block^2), not O(n^2).
    """
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {n}")
    sq = x.pow(2).sum(1)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    for i in range(0, n, block):
        rows = x[i:i + block]
        best = torch.full((rows.shape[0], k + 1), math.inf, dtype=x.dtype, device=x.device)
        for j in range(0, n, block):
            d = _sq_dists(rows, x[j:j + block], sq[i:i + block], sq[j:j + block])
            best = torch.cat([best, d], 1).topk(k + 1, dim=1, largest=False).values
        out[i:i + block] = best[:, k]  # entry 0 is the point itself (distance 0)
    return out


def _inside_any_ball(query: Tensor, centers: Tensor, radii_sq: Tensor, block: int) -> Tensor:
    """For each query row: is it within radius of at least one center (distance <= that center's radius)?"""
    q_sq, c_sq = query.pow(2).sum(1), centers.pow(2).sum(1)
    inside = torch.zeros(query.shape[0], dtype=torch.bool, device=query.device)
    for i in range(0, query.shape[0], block):
        hit = torch.zeros(min(block, query.shape[0] - i), dtype=torch.bool, device=query.device)
        for j in range(0, centers.shape[0], block):
            d = _sq_dists(query[i:i + block], centers[j:j + block], q_sq[i:i + block], c_sq[j:j + block])
            hit |= (d <= radii_sq[None, j:j + block]).any(1)
            if bool(hit.all()):
                break
        inside[i:i + block] = hit
    return inside


def precision_recall(*, real: Tensor, fake: Tensor, k: int = 3, block: int = 4096,
                     dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

    precision: fraction of ``fake`` samples inside the real manifold (the union of balls around each real
    sample reaching its k-th nearest real neighbour); recall: fraction of ``real`` samples inside the fake
    manifold. Ties count as inside (distance <= radius), as in the paper's code.
    """
    real, fake = real.to(dtype), fake.to(dtype)
    r_real, r_fake = knn_radii(real, k, block), knn_radii(fake, k, block)
    precision = _inside_any_ball(fake, real, r_real, block).float().mean().item()
    recall = _inside_any_ball(real, fake, r_fake, block).float().mean().item()
    return {"precision": precision, "recall": recall}
