"""Training: `train_and_evaluate(config, workdir)` runs the trainer `config.model` names."""

from __future__ import annotations

import ml_collections

from toonjax.errors import ConfigError

TRAINERS = {
    "dcgan": "toonjax.train.dcgan",
    "stylegan2_ada": "toonjax.train.stylegan2",
    "cartoongan": "toonjax.train.cartoongan",
    "toonify_distill": "toonjax.train.distill",
}


# Fields that must be positive (> 0) when a config has them, and those that may be 0. Checked
# before any data is read or anything compiles, so a typo costs a second, not a compile.
_POSITIVE_INT = ("batch_size", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
                 "batch_gpu", "kimg_per_tick", "image_snapshot_ticks", "network_snapshot_ticks",
                 "num_samples")  # fmt: skip
_POSITIVE = ("total_kimg",)
_NON_NEGATIVE = ("total_steps", "epochs", "num_devices", "evaluate_every", "metric_ticks",
                 "init_epochs", "init_steps", "adv_steps")  # fmt: skip


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line ConfigError for a count that cannot work (batch_size=0, total_steps=-5, ...)."""

    def number(name: str, value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"--config.{name}={value!r}: give a number")
        return value

    for name in _POSITIVE_INT:
        if name in config and config[name] is not None:
            v = number(name, config[name])
            if v <= 0 or (name != "kimg_per_tick" and v != int(v)):
                raise ConfigError(f"--config.{name}={v}: must be a whole number >= 1")
    for name in _POSITIVE:
        if name in config and number(name, config[name]) <= 0:
            raise ConfigError(f"--config.{name}={config[name]}: must be > 0")
    for name in _NON_NEGATIVE:
        if name in config and config[name] is not None and number(name, config[name]) < 0:
            raise ConfigError(
                f"--config.{name}={config[name]}: must be >= 0"
                + (" (the number of steps to train to)" if name == "total_steps" else "")
            )
    if "total_steps" in config and config.get("epochs", 0) == 0 and config.total_steps == 0:
        raise ConfigError(
            "--config.total_steps=0 trains nothing: give the step to train to (or --config.epochs)"
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
    """Trains (or resumes) the model `config.model` in `workdir`; returns the final state."""
    import importlib

    name = config.get("model")
    if name not in TRAINERS:
        raise ConfigError(
            f"config.model={name!r} is not a known trainer; choose from {sorted(TRAINERS)}"
        )
    validate(config)
    from toonjax.train import distributed, remote

    if not remote.is_remote(workdir):
        return importlib.import_module(TRAINERS[name]).train(config, workdir)
    # gs://BUCKET/PATH: checkpoints in the bucket, run files staged locally (train/remote.py)
    primary = distributed.setup(config).primary
    with remote.workdir_for(workdir, primary) as local:
        return importlib.import_module(TRAINERS[name]).train(config, local)
