"""Plots keys of training logs side by side, e.g. ADA's p and r_t of two runs:

    python launch/plot_runs.py --run noaug=runs/small-noaug --run ada=runs/small-ada \
        --keys ada_p,rt --hline rt=0.6 --out docs/ada_small_data.png
"""

import argparse

from toonjax.tools.plot import plot_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR (repeat)")
    ap.add_argument("--keys", default="ada_p,rt", help="comma-separated metrics.jsonl keys")
    ap.add_argument("--hline", action="append", default=[], help="KEY=VALUE reference line")
    ap.add_argument("--out", required=True, help="PNG to write")
    a = ap.parse_args()
    runs = dict(r.split("=", 1) for r in a.run)
    hlines = {k: float(v) for k, v in (h.split("=", 1) for h in a.hline)}
    labels = {"ada_p": "augmentation probability p", "rt": "r_t = E[sign(D(real))]"}
    plot_runs(runs, a.keys.split(","), a.out, hlines=hlines, labels=labels)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
