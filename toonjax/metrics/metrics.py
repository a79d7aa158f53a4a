"""Named metrics (the reference's names) on a network against a packed dataset, and a direct
comparison of two image sets.

Names: `fid50k_full`, `kid50k_full` (50,000 generated images against the full dataset),
`fidNk` / `kidNk` (N*1000 generated against a random N*1000 reals), `fidNk_full` / `kidNk_full`,
and plain `fid` / `kid` (the full dataset against `num_gen` images, default 50,000). A given
`num_gen` replaces the generated count of every metric (the JSON line records the real one).
KID: 100 subsets of min(1000, n) rows (the reference's settings).

    results = calc_metrics("nets/toon256", "data/faces256", ["fid50k_full", "kid50k_full"],
                           features="inception.npz")
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toonjax.metrics import distances, inception
from toonjax.metrics import features as feature_files
from toonjax.metrics.stats import (
    Extractor,
    FeatureStats,
    MetricsError,
    count_images,
    dataset_stats,
    generator_stats,
    path_stats,
)

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
_NAME = re.compile(r"^(fid|kid)(?:(\d+)k(_full)?)?$")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # 'fid' or 'kid'
    num_gen: int
    max_real: int | None  # None: the full dataset


def parse_metric(name: str, num_gen: int | None = None) -> MetricSpec:
    m = _NAME.match(name.strip())
    if not m:
        raise MetricsError(
            f"unknown metric {name!r}: use fid50k_full, kid50k_full, fidNk[_full], kidNk[_full], "
            "fid or kid"
        )
    kind, k, full = m.groups()
    if k is None:
        return MetricSpec(name, kind, int(num_gen or 50_000), None)
    n = int(k) * 1000
    if n <= 0:
        raise MetricsError(f"metric {name!r}: the count must be positive")
    return MetricSpec(name, kind, int(num_gen or n), None if full else n)


def parse_metrics(text: str | list[str], num_gen: int | None = None) -> list[MetricSpec]:
    names = text.split(",") if isinstance(text, str) else list(text)
    specs = [parse_metric(n, num_gen) for n in names if n.strip()]
    if not specs:
        raise MetricsError("no metrics given")
    return specs


def fid_of(a: FeatureStats, b: FeatureStats) -> float:
    """FID of two statistics; a set of fewer images than feature dimensions (with its features)
    takes the exact low-rank route (`distances.frechet_distance_lowrank`)."""
    small = [s for s in (a, b) if s.features is not None and s.n < len(s.mu)]
    if small:
        lo = min(small, key=lambda s: s.n)
        hi = b if lo is a else a
        factor = (lo.features.astype(np.float64) - lo.mu) / np.sqrt(lo.n - 1)
        return distances.frechet_distance_lowrank(lo.mu, factor, hi.mu, hi.sigma)
    return distances.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def metric_value(
    spec: MetricSpec, reals: FeatureStats, fakes: FeatureStats, seed: int = 0
) -> float:
    if spec.kind == "fid":
        return fid_of(reals, fakes)
    if reals.features is None or fakes.features is None:
        raise MetricsError("KID needs the features of both sets")
    return distances.kernel_inception_distance(
        fakes.features, reals.features, KID_SUBSETS, KID_SUBSET_SIZE, seed=seed
    )


def jsonl_path(network: str | os.PathLike, name: str) -> Path:
    """`metrics-NAME.jsonl` in the network's directory, or next to a network file."""
    p = Path(network).expanduser().absolute()
    return (p if p.is_dir() else p.parent) / f"metrics-{name}.jsonl"


def calc_metrics(
    network: str | os.PathLike,
    data: str | os.PathLike,
    metrics: str | list[str],
    features: str | os.PathLike | None,
    *,
    num_gen: int | None = None,
    truncation_psi: float = 1.0,
    classes: str | int | None = "dataset",
    mirror: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    num_devices: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    write_jsonl: bool = True,
    verbose: bool = True,
) -> list[dict]:
    """Computes the metrics; returns (and appends to `metrics-NAME.jsonl`) one record each.

    `features`: the FID Inception weights; None: `$TOONJAX_FEATURES/inception.npz`
    (`toonjax.metrics.features.resolve`). Generated features are computed once for the largest
    `num_gen` (smaller ones use a prefix), real statistics once per real-set size (cached on
    disk).
    """
    from toonjax.convert.network import load_network
    from toonjax.data import records

    specs = parse_metrics(metrics, num_gen)
    net = inception.load_feature_net(features_path(features))
    bundle = load_network(network)
    meta = records.read_metadata(data)
    labels = records.read_labels(data, meta)
    ext = Extractor(net, batch_size=batch_size, num_devices=num_devices)
    results = evaluate_bundle(
        bundle,
        data,
        specs,
        ext,
        truncation_psi=truncation_psi,
        classes=classes,
        labels=labels,
        mirror=mirror,
        seed=seed,
        cache_dir=cache_dir,
        use_cache=use_cache,
        verbose=verbose,
    )
    out = []
    for res in results:
        record = {
            "metric": res["metric"],
            "results": res["results"],
            "num_gen": res["num_gen"],
            "num_real": res["num_real"],
            "truncation_psi": truncation_psi,
            "classes": classes if bundle.c_dim else None,
            "mirror": mirror,
            "network": str(Path(network).expanduser().absolute()),
            "data": str(Path(data).expanduser().absolute()),
            "features": net.hash,
            "seed": seed,
            "num_devices": ext.mesh.size,
            "total_time": res["total_time"],
            "timestamp": time.time(),
        }
        out.append(record)
        if write_jsonl:
            path = jsonl_path(network, res["metric"])
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
            record = {**record, "jsonl": str(path)}
            out[-1] = record
    return out


def evaluate_bundle(
    bundle,
    data: str | os.PathLike,
    specs: list[MetricSpec],
    extractor: Extractor,
    *,
    truncation_psi: float = 1.0,
    classes: str | int | None = "dataset",
    labels: np.ndarray | None = None,
    mirror: bool = False,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    reals_cache: dict | None = None,
    verbose: bool = False,
    use_cache: bool = True,
) -> list[dict]:
    """The metrics of an in-memory `NetworkBundle` (its G_ema) against a packed dataset.

    One record per spec: {'metric', 'results': {name: value}, 'num_gen', 'num_real',
    'total_time'}. Generated features are computed once for the largest `num_gen`; real
    statistics once per real-set size, from the disk cache (`cache_dir`) and, when a dict is
    given as `reals_cache`, kept there so that repeated calls (a training run) reuse them.
    """
    need_feats = any(s.kind == "kid" for s in specs)
    num_gen = max(s.num_gen for s in specs)
    t0 = time.perf_counter()
    fakes = generator_stats(
        bundle,
        extractor,
        num_gen,
        truncation_psi=truncation_psi,
        classes=classes,
        labels=labels,
        seed=seed,
        # Fewer images than feature dimensions: their features make FID the cheap exact
        # low-rank computation (`fid_of`) instead of two d x d eigendecompositions.
        keep_features=need_feats or len({s.num_gen for s in specs}) > 1 or num_gen < extractor.dim,
        verbose=verbose,
    )
    fake_time = time.perf_counter() - t0
    reals_by_size: dict = {} if reals_cache is None else reals_cache
    out = []
    for spec in specs:
        t = time.perf_counter()
        reals = reals_by_size.get(spec.max_real)
        if reals is None or (need_feats and reals.features is None):
            reals = reals_by_size[spec.max_real] = dataset_stats(
                data,
                extractor,
                mirror=mirror,
                max_items=spec.max_real,
                seed=seed,
                keep_features=need_feats,
                cache_dir=cache_dir,
                use_cache=use_cache,
                verbose=verbose,
            )
        gen = fakes.first(spec.num_gen)
        value = metric_value(spec, reals, gen, seed)
        out.append(
            {
                "metric": spec.name,
                "results": {spec.name: value},
                "num_gen": gen.n,
                "num_real": reals.n,
                "total_time": time.perf_counter() - t + fake_time / len(specs),
            }
        )
    return out


def features_path(features: str | os.PathLike | None) -> Path:
    """The FID Inception file: `features`, else the default of `$TOONJAX_FEATURES` (the same
    resolver as `project --lpips`)."""
    return feature_files.resolve(features, "inception", "--features")


def compare(
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    features: str | os.PathLike | None,
    *,
    batch_size: int = 64,
    num_devices: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    seed: int = 0,
    verbose: bool = False,
) -> dict:
    """FID and KID between two image sets (folders, zips or packed datasets).

    `features`: the FID Inception weights (None: `$TOONJAX_FEATURES/inception.npz`). Each
    side's statistics are cached (`cache_dir`, default `stats.default_cache_dir()`;
    `use_cache=False`: neither read nor written). A side with fewer than 2 images is refused
    before anything is computed, naming the side."""
    sides = (("A", path_a), ("B", path_b))
    for side, p in sides:
        if not Path(p).exists():
            raise MetricsError(f"{side} ({p}): no such folder, zip or dataset")
    feats_file = features_path(features)
    for side, p in sides:
        n = count_images(p)
        if n < 2:
            raise MetricsError(
                f"{side} ({p}) has {n} image{'' if n == 1 else 's'}: FID needs at least 2 per "
                "side for a covariance (and thousands for a meaningful value); give a folder, "
                "zip or dataset with more images"
            )
    net = inception.load_feature_net(feats_file)
    if verbose:
        print(f"feature network: {net.source}", file=sys.stderr)
    ext = Extractor(net, batch_size=batch_size, num_devices=num_devices)
    kw = dict(keep_features=True, cache_dir=cache_dir, use_cache=use_cache, verbose=verbose)
    a = path_stats(path_a, ext, label=f"A ({path_a})", **kw)
    b = path_stats(path_b, ext, label=f"B ({path_b})", **kw)
    fid = fid_of(a, b)
    kid = distances.kernel_inception_distance(
        a.features, b.features, KID_SUBSETS, KID_SUBSET_SIZE, seed=seed
    )
    return {"fid": fid, "kid": kid, "n_a": a.n, "n_b": b.n, "features": net.hash}


def print_record(record: dict, file=None) -> None:
    name = record["metric"]
    print(
        f"{name}: {record['results'][name]:.6g} (generated {record['num_gen']}, reals "
        f"{record['num_real']}, {record['total_time']:.1f} s)",
        file=file or sys.stdout,
    )
