"""StyleGAN2-ADA augmentation (`augment`, `AugmentPipe`, `--augpipe` presets) and the ADA rule."""

from toonjax.augment.ada import (
    PRESETS,
    AugmentPipe,
    ada_rt,
    ada_sign_stats,
    ada_update,
    apply_color,
    augment,
    blit,
    pipe_fields,
    warp,
)

__all__ = [
    "PRESETS",
    "AugmentPipe",
    "ada_rt",
    "ada_sign_stats",
    "ada_update",
    "apply_color",
    "augment",
    "blit",
    "pipe_fields",
    "warp",
]
