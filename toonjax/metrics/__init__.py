"""FID / KID for toonjax: the FID Inception-v3 in Flax, feature statistics, distances.

    toonjax convert-features inception pt_inception-2015-12-05-6726825d.pth inception.npz
    toonjax metrics --network nets/toon256 --data data/faces256 --metrics fid50k_full,kid50k_full \
        --features inception.npz
    toonjax fid folder_a/ data/faces256 --features inception.npz
"""

from toonjax.metrics.distances import frechet_distance, kernel_inception_distance
from toonjax.metrics.inception import (
    FeatureNet,
    InceptionV3FID,
    convert_features,
    load_feature_net,
    params_from_state_dict,
)
from toonjax.metrics.metrics import calc_metrics, compare, evaluate_bundle, parse_metrics
from toonjax.metrics.stats import (
    Extractor,
    FeatureStats,
    dataset_stats,
    generator_stats,
    path_stats,
)

__all__ = [
    "Extractor",
    "FeatureNet",
    "FeatureStats",
    "InceptionV3FID",
    "calc_metrics",
    "compare",
    "convert_features",
    "dataset_stats",
    "evaluate_bundle",
    "frechet_distance",
    "generator_stats",
    "kernel_inception_distance",
    "load_feature_net",
    "params_from_state_dict",
    "parse_metrics",
    "path_stats",
]
