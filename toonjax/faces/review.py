"""Review material: contact-sheet PNG pages and an HTML page of every crop.

Each tile shows the crop with its id, source page, score and verdict; rejected crops get a
red frame and the reason. The user then edits `keep.txt` (one relative path per line, '#'
comments) which `toonjax dataset pack OUT ...` honours.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import cv2
import numpy as np

from toonjax.data.fsguard import printable

THUMB = 128
LABEL_H = 40
COLUMNS = 8
ROWS = 6


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _put(img, text, y, color=(0, 0, 0)):
    cv2.putText(img, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.33, color, 1, cv2.LINE_AA)


def _tile(crop: np.ndarray | None, rec: dict) -> np.ndarray:
    tile = np.full((THUMB + LABEL_H, THUMB, 3), 255, np.uint8)
    if crop is not None:
        tile[:THUMB] = cv2.resize(crop, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    keep = rec.get("keep", False)
    if not keep:
        cv2.rectangle(tile, (0, 0), (THUMB - 1, THUMB - 1), (220, 0, 0), 3)
    _put(tile, rec["id"][-20:], THUMB + 11)
    # printable: a page name that is not valid UTF-8 cannot go through cv2 or .encode()
    _put(tile, printable(Path(rec["source"]).name)[-22:], THUMB + 23)
    status = "keep" if keep else rec.get("reason", "reject")
    color = (0, 120, 0) if keep else (200, 0, 0)
    _put(tile, f"{rec['score']:.2f} {status}"[:24], THUMB + 35, color)
    return tile


def write_review(out: Path, records: list[dict]) -> list[Path]:
    """Writes OUT/review/sheet_NNNN.png (RGB tiles) and OUT/review/index.html."""
    review = out / "review"
    review.mkdir(parents=True, exist_ok=True)
    shown = [r for r in records if r.get("file")]
    per_sheet = COLUMNS * ROWS
    sheets = []
    for s in range(0, max(1, len(shown)), per_sheet):
        chunk = shown[s : s + per_sheet]
        if not chunk:
            break
        rows = (len(chunk) + COLUMNS - 1) // COLUMNS
        sheet = np.full((rows * (THUMB + LABEL_H), COLUMNS * THUMB, 3), 255, np.uint8)
        for k, rec in enumerate(chunk):
            bgr = cv2.imread(str(out / rec["file"]), cv2.IMREAD_COLOR)
            crop = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            r, c = divmod(k, COLUMNS)
            y, x = r * (THUMB + LABEL_H), c * THUMB
            sheet[y : y + THUMB + LABEL_H, x : x + THUMB] = _tile(crop, rec)
        path = review / f"sheet_{len(sheets) + 1:04d}.png"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if ok:
            _atomic_write_bytes(path, buf.tobytes())
            sheets.append(path)
    for stale in sorted(review.glob("sheet_*.png"))[len(sheets) :]:
        stale.unlink()

    kept = sum(1 for r in shown if r.get("keep"))
    parts = [
        "<!doctype html><meta charset='utf-8'><title>toonjax faces review</title>",
        "<style>body{font:12px sans-serif}figure{display:inline-block;margin:4px;width:136px}"
        "img{width:128px;height:128px;border:3px solid #3a3}.rej img{border-color:#d22}"
        "figcaption{overflow-wrap:anywhere}</style>",
        f"<h1>{len(shown)} crops, {kept} kept</h1>",
        "<p>Edit <code>keep.txt</code> (one path per line) to choose what "
        "<code>toonjax dataset pack</code> packs; <code>reject.txt</code> lists the rest.</p>",
    ]
    for rec in shown:
        cls = "" if rec.get("keep") else " class='rej'"
        status = "keep" if rec.get("keep") else html.escape(rec.get("reason", "reject"))
        parts.append(
            f"<figure{cls}><img src='../{html.escape(rec['file'])}' loading='lazy'>"
            f"<figcaption>{html.escape(rec['id'])}<br>{html.escape(printable(rec['source']))}<br>"
            f"score {rec['score']:.3f} · blur {rec.get('blur', 0):.0f} · {status}"
            "</figcaption></figure>"
        )
    _atomic_write_bytes(review / "index.html", "\n".join(parts).encode())
    return sheets
