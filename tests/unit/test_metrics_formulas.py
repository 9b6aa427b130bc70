"""The metric formulas against independent numpy/scipy references (seed 000's appendix) and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from difgan.metrics.formulas import (
    feature_statistics,
    fid,
    fid_against_features,
    fid_from_statistics,
    inception_score,
    kid,
    kid_subset_indices,
    knn_radii,
    precision_recall,
    psd_sqrt,
)


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


# ------------------------------------------------------------------ references written from the formulas
def np_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Seed 000, figure 17: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, s1 = real.mean(0), np.cov(real, rowvar=False)
    mu2, s2 = fake.mean(0), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1 + s2 - 2 * covmean))


def np_mmd(real: np.ndarray, fake: np.ndarray) -> float:
    """Seed 000, figure 18: unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3."""
    d = real.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    k_rr, k_gg, k_rg = k(real, real), k(fake, fake), k(real, fake)
    m, n = len(real), len(fake)
    return float((k_rr.sum() - np.trace(k_rr)) / (m * (m - 1)) + (k_gg.sum() - np.trace(k_gg)) / (n * (n - 1))
                 - 2 * k_rg.sum() / (m * n))


def np_is(probs: np.ndarray, splits: int) -> tuple[float, float]:
    """Seed 000, figure 16 (without its 1e-10 epsilon)."""
    scores, n = [], len(probs)
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        py = part.mean(0)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def brute_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def dists(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dists(real, real), axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(dists(fake, fake), axis=1)[:, k]
    precision = np.mean([(dists(f[None], real)[0] <= r_real).any() for f in fake])
    recall = np.mean([(dists(r[None], fake)[0] <= r_fake).any() for r in real])
    return float(precision), float(recall)


# ------------------------------------------------------------------ FID
def test_fid_of_a_set_against_itself_is_zero():
    x = _gauss(300, 16, 0)
    assert abs(fid(real=x, fake=x)) < 1e-8
    wide = _gauss(40, 64, 1)  # n < d: singular covariance
    assert abs(fid(real=wide, fake=wide)) < 1e-6 * float(np.trace(np.cov(wide.numpy(), rowvar=False)))


@pytest.mark.parametrize("n_real,n_fake,d,shift", [
    (200, 217, 8, 0.3), (500, 517, 32, 0.0), (120, 137, 64, 1.0),
    (300, 40, 64, 0.2),  # fewer fakes than dimensions: the n x n path
])
def test_fid_matches_scipy_formula(n_real, n_fake, d, shift):
    real, fake = _gauss(n_real, d, 1), _gauss(n_fake, d, 2, shift=shift, scale=1.3)
    ref = np_fid(real.numpy(), fake.numpy())
    assert fid(real=real, fake=fake) == pytest.approx(ref, rel=1e-4)
    stats = feature_statistics(real)
    assert fid_from_statistics(real=stats, fake=feature_statistics(fake)) == pytest.approx(ref, rel=1e-4)
    sqrt = psd_sqrt(stats[1])
    assert fid_against_features(real=stats, fake=fake, real_sqrt=sqrt) == pytest.approx(ref, rel=1e-4)


def test_fid_from_cached_statistics_equals_from_features_and_float32_input():
    real, fake = _gauss(300, 12, 3), _gauss(300, 12, 4, shift=0.5)
    stats = feature_statistics(real.float())
    assert fid_from_statistics(real=stats, fake=feature_statistics(fake.float())) == pytest.approx(
        np_fid(real.numpy(), fake.numpy()), rel=1e-4)


# ------------------------------------------------------------------ KID
def test_kid_with_whole_sets_matches_numpy_formula():
    real, fake = _gauss(150, 10, 5), _gauss(150, 10, 6, shift=0.4)
    mean, std, size = kid(real=real, fake=fake, subsets=3, subset_size=1000)
    assert size == 150  # capped at n (a subset can never exceed the set)
    assert mean == pytest.approx(np_mmd(real.numpy(), fake.numpy()), rel=1e-4)
    assert std == pytest.approx(0.0, abs=1e-9 * abs(mean))  # every subset is the whole set


def test_kid_subsets_match_numpy_formula_on_the_same_indices():
    real, fake = _gauss(400, 20, 7), _gauss(300, 20, 8, shift=0.3)
    mean, std, size = kid(real=real, fake=fake, subsets=8, subset_size=100, seed=3)
    ref = [np_mmd(real[i].numpy(), fake[j].numpy()) for i, j in kid_subset_indices(400, 300, 8, 100, seed=3)]
    assert size == 100
    assert mean == pytest.approx(np.mean(ref), rel=1e-4)
    assert std == pytest.approx(np.std(ref), rel=1e-4)


def test_kid_is_near_zero_for_same_distribution_and_positive_when_shifted():
    a, b = _gauss(400, 8, 9), _gauss(400, 8, 10)
    same, _, _ = kid(real=a, fake=b, subsets=10, subset_size=200)
    shifted, _, _ = kid(real=a, fake=_gauss(400, 8, 11, shift=1.0), subsets=10, subset_size=200)
    assert abs(same) < 0.02 * shifted


# ------------------------------------------------------------------ IS
def test_inception_score_matches_numpy_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g) * 3
    probs = torch.softmax(logits.double(), 1).numpy()
    for splits in (1, 4):
        mean, std = inception_score(logits, splits)
        ref_mean, ref_std = np_is(probs, splits)
        assert mean == pytest.approx(ref_mean, rel=1e-4)
        assert std == pytest.approx(ref_std, rel=1e-4, abs=1e-9)


def test_inception_score_extremes():
    confident_diverse = torch.eye(10).repeat(5, 1) * 50
    assert inception_score(confident_diverse, 1)[0] == pytest.approx(10, rel=1e-3)
    one_class = torch.zeros(50, 10)
    one_class[:, 3] = 50
    assert inception_score(one_class, 1)[0] == pytest.approx(1, rel=1e-3)


# ------------------------------------------------------------------ precision / recall
@pytest.mark.parametrize("seed,k", [(0, 3), (1, 3), (2, 5), (3, 1)])
def test_precision_recall_match_brute_force(seed, k):
    real, fake = _gauss(120, 6, seed), _gauss(90, 6, seed + 100, shift=0.5, scale=0.8)
    ours = precision_recall(real=real, fake=fake, k=k, dtype=torch.float64)
    assert (ours["precision"], ours["recall"]) == pytest.approx(brute_pr(real.numpy(), fake.numpy(), k))


def test_precision_recall_blocked_equals_unblocked():
    real, fake = _gauss(203, 5, 4), _gauss(157, 5, 5, shift=0.3)
    whole = precision_recall(real=real, fake=fake, block=10_000, dtype=torch.float64)
    tiled = precision_recall(real=real, fake=fake, block=17, dtype=torch.float64)
    assert whole == tiled
    assert torch.allclose(knn_radii(real, 3, block=7), knn_radii(real, 3, block=1000), rtol=1e-12, atol=0)


def test_precision_recall_arguments_cannot_be_swapped_by_position():
    x = _gauss(20, 3, 0)
    with pytest.raises(TypeError):
        precision_recall(x, x)  # noqa
    with pytest.raises(TypeError):
        fid(x, x)  # noqa


def test_precision_recall_on_two_gaussians():
    real = _gauss(600, 8, 20)
    base = precision_recall(real=real, fake=_gauss(600, 8, 21))
    shifted = precision_recall(real=real, fake=_gauss(600, 8, 22, shift=1.5))
    assert base["precision"] > 0.8 and base["recall"] > 0.8
    assert shifted["precision"] < base["precision"] - 0.3  # fakes off the real manifold

    # two well separated modes; the fake set covers only one of them
    g = torch.Generator().manual_seed(23)
    centers = torch.zeros(2, 8, dtype=torch.float64)
    centers[1, 0] = 20.0
    modes = torch.arange(600) % 2
    two_modes = torch.randn(600, 8, generator=g, dtype=torch.float64) + centers[modes]
    half = torch.randn(600, 8, generator=g, dtype=torch.float64) + centers[0]
    pr = precision_recall(real=two_modes, fake=half)
    assert pr["recall"] < 0.6  # half the real modes are not covered
    assert pr["precision"] > 0.8  # what is generated is still realistic


def test_kid_with_precomputed_gram_equals_per_subset_kernels(monkeypatch):
    import difgan.metrics.formulas as formulas

    real, fake = _gauss(300, 16, 30), _gauss(250, 16, 31, shift=0.2)
    fast = kid(real=real, fake=fake, subsets=6, subset_size=80, seed=1)
    monkeypatch.setattr(formulas, "GRAM_LIMIT", 0)  # force the per-subset path
    slow = kid(real=real, fake=fake, subsets=6, subset_size=80, seed=1)
    assert fast == pytest.approx(slow, rel=1e-9)
