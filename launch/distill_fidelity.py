"""Fidelity of a distilled translator on held-out pairs, next to the projection path (#14).

    python launch/distill_fidelity.py --translator runs/distill-toy --pairs data/distill-toy64 \
        --n 500 --base runs/sg2-toyfaces --toon runs/toy-blend16 --lpips random:0 --mse 1 --out f.json

L1 (and LPIPS) between the StyleGAN toon image of the last --n pairs (the trainer's held-out
end) and: the translator's output on the base image; the base image itself; with --base and
--toon, projection (--preset) into the base rendered by the toon. Flags only; the logic is
`toonjax.tools.distill.fidelity`.
"""

import json

from absl import app, flags

_TRANSLATOR = flags.DEFINE_string("translator", None, "distill workdir or translator dir.")
_PAIRS = flags.DEFINE_string("pairs", None, "the paired set it was trained on.")
_N = flags.DEFINE_integer("n", 500, "held-out pairs (the last N of the set).")
_BASE = flags.DEFINE_string("base", None, "projection path: the base network.")
_TOON = flags.DEFINE_string("toon", None, "projection path: the toon network.")
_PROJECT_N = flags.DEFINE_integer("project_n", None, "projection path: first K of the N.")
_PRESET = flags.DEFINE_enum("preset", "fast", ["fast", "reference"], "projector preset.")
_LPIPS = flags.DEFINE_string(
    "lpips",
    None,
    "LPIPS for the projector's loss and the metric: a converted .npz / lpips vgg.pth, or "
    "random:SEED (a narrow random VGG: a structural stand-in when no weights are installed); "
    "default: the features folder's converted files.",
)
_MSE = flags.DEFINE_float(
    "mse", None, "projector pixel-MSE weight (with --lpips random:SEED, use e.g. 1.0)."
)
_BATCH = flags.DEFINE_integer("batch", 50, "images per projector / translator call.")
_OUT = flags.DEFINE_string("out", None, "write the numbers as JSON here.")

flags.mark_flags_as_required(["translator", "pairs"])


def main(argv):
    del argv
    import ml_collections

    from toonjax.tools import distill
    from toonjax.train import distill as train_distill

    lpips = None
    if _LPIPS.value:
        loss = ml_collections.ConfigDict(
            {
                "lpips_weight": 1.0,
                "lpips_weights": _LPIPS.value,
                "lpips_widths": (8, 16, 32, 32, 32),
            }
        )
        module, variables, what = train_distill.lpips_network(
            ml_collections.ConfigDict({"loss": loss})
        )
        print(f"LPIPS: {what}")
        lpips = (module, variables)
    r = distill.fidelity(
        _TRANSLATOR.value, _PAIRS.value, n=_N.value, base=_BASE.value, toon=_TOON.value,
        project_n=_PROJECT_N.value, preset=_PRESET.value, lpips=lpips, mse_weight=_MSE.value,
        batch=_BATCH.value,
    )  # fmt: skip
    print(json.dumps(r, indent=1))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    app.run(main)
