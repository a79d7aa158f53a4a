"""Train a toonjax GAN: `python launch/train.py --config configs/dcgan.py:toyfaces --workdir W`.

Flags only; the logic lives in `toonjax.train.train_and_evaluate` (same as `toonjax train`).
"""

import sys

from toonjax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))
