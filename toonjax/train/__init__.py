"""Training: `train_and_evaluate(config, workdir)` runs the trainer `config.model` names."""

from __future__ import annotations

import ml_collections

from toonjax.errors import ConfigError

TRAINERS = {"dcgan": "toonjax.train.dcgan", "stylegan2_ada": "toonjax.train.stylegan2"}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
    """Trains (or resumes) the model `config.model` in `workdir`; returns the final state."""
    import importlib

    name = config.get("model")
    if name not in TRAINERS:
        raise ConfigError(
            f"config.model={name!r} is not a known trainer; choose from {sorted(TRAINERS)}"
        )
    return importlib.import_module(TRAINERS[name]).train(config, workdir)
