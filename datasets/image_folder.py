"""TFDS builder for any folder of face images (`image_folder`), stored as ArrayRecord.

The images are read, converted and resized with the same helpers as `toonjax dataset pack`
(`toonjax.data.pack`): EXIF orientation, 8-bit RGB (transparency on white, 16-bit scaled),
largest centred square, Lanczos resize. They are yielded as PNG *bytes*, so building needs no
TensorFlow (TFDS would import it to encode numpy arrays). Build and read:

    from datasets.image_folder import ImageFolder
    import tensorflow_datasets as tfds

    builder = ImageFolder(config="128", data_dir="~/tensorflow_datasets", file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="path/to/faces"))
    src = tfds.data_source("image_folder/128", data_dir="~/tensorflow_datasets", split="train")
    src[0]["image"]  # (128, 128, 3) uint8

Configs: "64", "128", "256" (image only) and "64_labeled", "128_labeled", "256_labeled"
(adds `label`, a ClassLabel whose names are the sub-folders of the manual dir, sorted).
Unusable files are skipped with a logged warning, like `toonjax dataset pack` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from toonjax.data import pack
from toonjax.errors import DatasetError

RESOLUTIONS = (64, 128, 256)


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
    resolution: int = 64
    with_labels: bool = False
    transform: str = "center-crop"
    resize_filter: str = "lanczos"


def _configs() -> list[ImageFolderConfig]:
    out = []
    for r in RESOLUTIONS:
        out.append(
            ImageFolderConfig(
                name=str(r), resolution=r, description=f"{r}x{r} RGB images, no labels"
            )
        )
        out.append(
            ImageFolderConfig(
                name=f"{r}_labeled",
                resolution=r,
                with_labels=True,
                description=f"{r}x{r} RGB images, label = sub-folder (class) name",
            )
        )
    return out


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """Any folder of face images, centre-cropped to a square and resized."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put your images (png, jpg, jpeg, bmp, webp, gif, tif, tiff; any size, any mode) under
`<manual_dir>/`, e.g. `tfds build datasets/image_folder.py --manual_dir=path/to/faces` or
`DownloadConfig(manual_dir="path/to/faces")`. Sub-folders are searched recursively; for the
`*_labeled` configs use one sub-folder per class (`<manual_dir>/<class>/...`), files directly
in `<manual_dir>/` are then skipped. Hidden files and folders are ignored. An optional
`<manual_dir>/keep.txt` (relative paths, one per line, '#' comments) restricts which files
are used. Non-square images are centre-cropped to the largest square.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        features = {
            "image": tfds.features.Image(
                shape=(cfg.resolution, cfg.resolution, 3), encoding_format="png"
            )
        }
        if cfg.with_labels:
            features["label"] = tfds.features.ClassLabel()  # names set from the sub-folders
        return tfds.core.DatasetInfo(
            builder=self,
            description="A folder of face images, packed with toonjax's image helpers.",
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label") if cfg.with_labels else None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        # tfds itself raises, with the instructions, when manual_dir is missing or empty.
        manual_dir = Path(dl_manager.manual_dir)
        with pack.open_source(manual_dir) as source:
            images = pack.list_images(source)
            if pack.KEEP_FILE in source:
                keep = set(pack.parse_keep_list(source.read(pack.KEEP_FILE).decode()))
                images = [rel for rel in images if rel in keep]
        if not images:
            exts = ", ".join(pack.IMAGE_EXTENSIONS)
            raise DatasetError(f"{manual_dir}: no images found (looked for {exts})")
        if self.builder_config.with_labels:
            classes = pack.folder_classes(images)
            if not classes:
                raise DatasetError(
                    f"{manual_dir}: the *_labeled configs need one sub-folder per class"
                )
            self.info.features["label"].names = classes
        return {"train": self._generate_examples(manual_dir, images)}

    def _generate_examples(self, manual_dir: Path, images: list[str]):
        cfg = self.builder_config

        def needs_class_folder(rel: str) -> None:
            if cfg.with_labels and "/" not in rel:
                raise pack.SkipImage("not in a class sub-folder")

        with pack.open_source(manual_dir) as source:
            items = pack.iter_prepared(
                source,
                images,
                resolution=cfg.resolution,
                transform=cfg.transform,
                resize_filter=cfg.resize_filter,
                precheck=needs_class_folder,
            )
            for rel, png, _, reason in items:
                if png is None:
                    logging.warning("image_folder: skipping %s: %s", rel, reason)
                    continue
                example = {"image": png}
                if cfg.with_labels:
                    example["label"] = rel.split("/", 1)[0]
                yield rel, example
