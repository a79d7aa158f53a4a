"""TensorFlow Datasets builder for toonjax's procedural toy faces.

    import tensorflow_datasets as tfds
    import datasets.toyfaces  # registers the builder
    tfds.data_source("toyfaces/64", data_dir=...)  # builds on first use: 5000 faces at 64x64

    # Another size, count or seed (e.g. for tests):
    from datasets.toyfaces import Toyfaces, ToyfacesConfig
    builder = Toyfaces(config=ToyfacesConfig(resolution=16, num_examples=20),
                       data_dir=..., file_format="array_record")

It builds without TensorFlow installed: it yields PNG bytes, and `file_format="array_record"`
(the default for `tfds.data_source`) needs no TFRecord writer.  Record i is
`toonjax.data.toyfaces.draw_face(seed, i, resolution)`; the label is its hair colour
(`toyfaces.HAIR_COLORS`).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from toonjax.data import records, toyfaces

DEFAULT_NUM_EXAMPLES = 5000


class ToyfacesConfig(tfds.core.BuilderConfig):
    """`resolution` (32, 64 or 128 are registered; any of 16..256 works), face count and seed.

    The name is the resolution for the registered configs; other counts or seeds get their own
    name (e.g. `16_n20_s0`) so they never share a data directory with the defaults.
    """

    def __init__(
        self,
        *,
        resolution: int,
        num_examples: int = DEFAULT_NUM_EXAMPLES,
        seed: int = 0,
        **kwargs,
    ):
        default = num_examples == DEFAULT_NUM_EXAMPLES and seed == 0
        kwargs.setdefault(
            "name", str(resolution) if default else f"{resolution}_n{num_examples}_s{seed}"
        )
        kwargs.setdefault(
            "description", f"{num_examples} faces at {resolution}x{resolution} (seed {seed})"
        )
        super().__init__(**kwargs)
        self.resolution = resolution
        self.num_examples = num_examples
        self.seed = seed


class Toyfaces(tfds.core.GeneratorBasedBuilder):
    """Procedural anime-style cartoon faces; the label is the hair colour."""

    VERSION = tfds.core.Version(f"1.0.{toyfaces.GENERATOR_VERSION}")
    RELEASE_NOTES = {"1.0.1": "First release."}
    BUILDER_CONFIGS = [ToyfacesConfig(resolution=r) for r in (32, 64, 128)]
    DEFAULT_CONFIG_NAME = "64"

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(r, r, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=list(toyfaces.HAIR_COLORS)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep generation order (record i is toyfaces.draw_face(seed, i)); shuffle when reading.
            disable_shuffling=True,
            description=toyfaces.__doc__,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config
        for i, (image, label) in enumerate(
            toyfaces.generate(cfg.num_examples, cfg.resolution, cfg.seed)
        ):
            # PNG bytes, not arrays: encoding arrays would need TensorFlow.
            yield i, {"image": records.encode_png(image), "label": label}
