"""Quality and duplicate filters: blur, perceptual hashes (pHash, dHash), content hash.

* blur: variance of the Laplacian of the grey crop at the output size (flat-shaded cartoon
  art scores lower than photos even when sharp, so calibrate `threshold` on your art; the
  value of every crop is in the manifest).
* pHash: 32x32 grey, 2-D DCT, the 8x8 lowest frequencies compared with their median (64 bits).
* dHash: 9x8 grey, each pixel compared with its right neighbour (64 bits).
* near-duplicates: Hamming distance <= threshold, to the crop or to its mirror image (hashes of
  the mirrored crop are kept too), grouped by union-find; each group keeps one member.
* exact duplicates: SHA-256 of the crop pixels.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

HASHES = ("phash", "dhash")


def laplacian_var(img: np.ndarray) -> float:
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def _bits_to_int(bits: np.ndarray) -> int:
    v = 0
    for b in bits.flatten():
        v = (v << 1) | int(b)
    return v


def phash(img: np.ndarray) -> int:
    small = cv2.resize(_gray(img), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    return _bits_to_int(low > np.median(low))


def dhash(img: np.ndarray) -> int:
    small = cv2.resize(_gray(img), (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    return _bits_to_int(small[:, 1:] > small[:, :-1])


def image_hash(img: np.ndarray, kind: str) -> int:
    if kind == "phash":
        return phash(img)
    if kind == "dhash":
        return dhash(img)
    raise ValueError(f"hash {kind!r}: use phash or dhash")


def content_hash(img: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def hashes(img: np.ndarray) -> dict[str, str]:
    """Every hash of a crop (and of its mirror) as hex strings, for the manifest."""
    flipped = img[:, ::-1]
    return {
        "phash": f"{phash(img):016x}",
        "phash_mirror": f"{phash(flipped):016x}",
        "dhash": f"{dhash(img):016x}",
        "dhash_mirror": f"{dhash(flipped):016x}",
        "sha256": content_hash(img),
    }


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(axis=-1)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def duplicate_groups(
    plain: list[int], mirror: list[int], sha: list[str], threshold: int
) -> list[list[int]]:
    """Groups (of >= 2 indices) of exact or near duplicates, mirrored copies included."""
    n = len(plain)
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    for i, s in enumerate(sha):
        if s in first:
            uf.union(first[s], i)
        else:
            first[s] = i
    if n > 1 and threshold >= 0:
        p = np.array(plain, np.uint64)
        m = np.array(mirror, np.uint64)
        for i in range(n - 1):
            d = np.minimum(_popcount(p[i + 1 :] ^ p[i]), _popcount(p[i + 1 :] ^ m[i]))
            for j in np.flatnonzero(d <= threshold):
                uf.union(i, i + 1 + int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
