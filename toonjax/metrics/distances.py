"""Distances between two feature sets: Fréchet distance (FID) and kernel MMD (KID), in numpy.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the two sets,

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)),

computed in float64. Only the trace of the matrix square root is needed, and it equals the sum
of the square roots of the eigenvalues of S1 S2, which are those of the symmetric PSD matrix
S1^(1/2) S2 S1^(1/2) (method "eigh", the default: two symmetric eigendecompositions, no complex
arithmetic, stable for rank-deficient covariances). Method "sqrtm" is what the reference code
does (`scipy.linalg.sqrtm(S1 @ S2)`, imaginary part discarded); it warns when the discarded
part is not tiny.

KID (Bińkowski et al. 2018) is the unbiased estimate of the squared MMD with the polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over `num_subsets` random subsets of
`min(n1, n2, max_subset_size)` rows of each set (the reference's 100 subsets of 1000).
"""

from __future__ import annotations

import warnings

import numpy as np

IMAG_WARN = 1e-3  # relative size of a discarded imaginary part worth a warning


class FrechetWarning(UserWarning):
    """The matrix square root needed a fix-up (imaginary part, negative eigenvalues)."""


def _psd_sqrt(s: np.ndarray) -> tuple[np.ndarray, float]:
    w, v = np.linalg.eigh(s)
    neg = float(-w.min()) if w.min() < 0 else 0.0
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T, neg


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str = "eigh") -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, in float64."""
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    if method == "eigh":
        a, neg1 = _psd_sqrt((s1 + s1.T) / 2)
        m = a @ s2 @ a
        w = np.linalg.eigvalsh((m + m.T) / 2)
        scale = max(float(np.abs(w).max()), 1e-300)
        neg = max(neg1 / max(float(np.abs(np.diag(s1)).max()), 1e-300), -float(w.min()) / scale)
        if neg > 1e-6:
            warnings.warn(
                f"Fréchet distance: a covariance has negative eigenvalues down to {neg:.1e} of "
                "its largest (set to 0); the statistics may be corrupt",
                FrechetWarning,
                stacklevel=3,
            )
        # Eigenvalues below the rounding floor of M are zeros of a rank-deficient covariance
        # (fewer samples than dimensions); their square roots would add pure noise.
        floor = scale * len(w) * np.finfo(np.float64).eps
        return float(np.sqrt(np.where(w > floor, w, 0.0)).sum())
    if method == "sqrtm":
        import scipy.linalg

        root = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(root).all():  # singular product: nudge both diagonals (as pytorch-fid)
            eps = np.eye(len(s1)) * 1e-6
            root = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
        if np.iscomplexobj(root):
            imag = float(np.abs(root.imag).max())
            scale = max(float(np.abs(root.real).max()), 1e-300)
            if imag / scale > IMAG_WARN:
                warnings.warn(
                    f"Fréchet distance: sqrtm has an imaginary part of {imag:.2e} "
                    f"({imag / scale:.1e} of its real part), discarded",
                    FrechetWarning,
                    stacklevel=3,
                )
            root = root.real
        return float(np.trace(root))
    raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh"
) -> float:
    """The squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (= FID)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"shapes differ: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    diff = mu1 - mu2
    tr = np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2, method)
    return float(diff @ diff + tr)


def frechet_distance_lowrank(
    mu1: np.ndarray, factor1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """`frechet_distance` when sigma1 = factor1.T @ factor1 with few rows (k < d samples).

    The nonzero eigenvalues of S1 S2 are those of the k x k matrix F1 S2 F1.T, so the trace of
    the square root costs a k x k eigendecomposition instead of a d x d one (for sets of fewer
    images than feature dimensions). With centred features X1 [n, d]: factor1 = X1 / sqrt(n-1).
    """
    f1 = np.asarray(factor1, np.float64)
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s2 = np.asarray(sigma2, np.float64)
    m = f1 @ s2 @ f1.T
    w = np.linalg.eigvalsh((m + m.T) / 2)
    floor = max(float(np.abs(w).max()), 1e-300) * len(s2) * np.finfo(np.float64).eps
    tr_sqrt = float(np.sqrt(np.where(w > floor, w, 0.0)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(f1 * f1) + np.trace(s2) - 2 * tr_sqrt)


def kid_subset(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size sets with k(a, b) = (a.b / d + 1)^3, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kernel_inception_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID: the mean of `kid_subset` over random subsets (drawn without replacement)."""
    n1, n2 = len(feats1), len(feats2)
    m = min(n1, n2, max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {n1} and {n2}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = feats1[rng.choice(n1, m, replace=False)]
        y = feats2[rng.choice(n2, m, replace=False)]
        total += kid_subset(x, y)
    return total / num_subsets
