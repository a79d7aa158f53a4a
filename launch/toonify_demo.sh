#!/usr/bin/env bash
# The README's toonify-tools pictures, made by the `toonjax` commands on two toy-face networks:
#
#   toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir runs/sg2-toyfaces
#   python launch/toon_domain.py data/comicfaces-src --n 2000 --resolution 64
#   toonjax dataset pack data/comicfaces-src data/comicfaces-64 --resolution 64
#   toonjax train --config configs/stylegan2_ada.py:toyfaces --workdir runs/comic-ft \
#       --config.data.path=data/comicfaces-64 --config.data.toyfaces=False \
#       --config.resume_path=runs/sg2-toyfaces --config.total_kimg=6
#   bash launch/toonify_demo.sh runs/sg2-toyfaces runs/comic-ft out/toonify-demo LPIPS.npz
#
# BASE plays the photo model, TOON its fine-tuned cartoon copy; LPIPS is the converted LPIPS
# weights for the projection (`toonjax convert-features lpips vgg.pth LPIPS.npz`).
set -euo pipefail
BASE=${1:?usage: toonify_demo.sh BASE TOON OUT LPIPS}
TOON=${2:?usage: toonify_demo.sh BASE TOON OUT LPIPS}
OUT=${3:?usage: toonify_demo.sh BASE TOON OUT LPIPS}
LPIPS=${4:?usage: toonify_demo.sh BASE TOON OUT LPIPS}
mkdir -p "$OUT"

toonjax mix --network "$BASE" --rows 1,2,3 --cols 4,5,6,7 --styles 0-3 --outdir "$OUT/mix"
toonjax interpolate --network "$BASE" --seeds 0,1,2 --frames 8 --space w --outdir "$OUT/interp"
toonjax blend --base "$BASE" --toon "$TOON" --sweep 4,8,16,32,64,128 --seeds 0-5 \
    --overwrite "$OUT/sweep"
toonjax blend --base "$BASE" --toon "$TOON" --swap-res 16 --overwrite "$OUT/blend16"
toonjax sefa --network "$BASE" --layers all --top 5 "$OUT/dirs.npz"
toonjax sefa-apply --network "$OUT/blend16" --directions "$OUT/dirs.npz" --index 0 \
    --degrees -6,-3,0,3,6 --seeds 0-3 --outdir "$OUT/sefa"
# A held-out toy face (index 9000, never in the 5000-image training set) as the "photo".
python -c "
import cv2, sys
from toonjax.data.toyfaces import draw_face
img, _ = draw_face(0, 9000, 64)
cv2.imwrite(sys.argv[1], cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
" "$OUT/photo.png"
toonjax toonify --base "$BASE" --toon "$OUT/blend16" --no-align --preset fast --lpips "$LPIPS" \
    "$OUT/photo.png" "$OUT/toonify"
