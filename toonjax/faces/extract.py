"""`toonjax faces extract SRC OUT --detector ...`: comic pages -> reviewed square face crops.

Pipeline per page: read (folder or zip, any image mode, via `toonjax.data.pack`) -> panels
(`panels.find_panels`) -> detect per panel (tiled when a panel is very tall) -> square crop
with margin (`crops.make_crop`) -> size and blur filters -> write the crop. After all pages:
exact and near-duplicate grouping over every crop of OUT, then `keep.txt`, `reject.txt`,
`manifest.jsonl` and the contact sheets are (re)written.

OUT layout::

    crops/<page>-<hash6>-<k>.png   every crop that passed the size filter (kept or not)
    manifest.jsonl                 one JSON line per detection (see `_record`)
    pages.jsonl                    one line per processed page (resume state)
    keep.txt / reject.txt          relative paths of kept / rejected crops (reasons as comments)
    review/sheet_NNNN.png, review/index.html
    extract.json                   the settings OUT was made with

Detectors with landmarks (`--detector animeface`) give level crops: the square is rolled so
the eyes are level (`toonjax.faces.anime`), and the manifest line also holds its `angle`,
`quad` and `landmarks`; `crop` is then the same square unrolled.

`toonjax dataset pack OUT DEST --resolution N` packs exactly the files listed in OUT/keep.txt.
Running the command again skips the pages listed in pages.jsonl; every file is written under a
temporary name and renamed, so an interrupted run leaves no half-written crop. When keep.txt
was edited since the last run it is left alone and the new lists go to keep.txt.new and
reject.txt.new.

OUT must be new, empty, or a folder this command made (it holds extract.json or pages.jsonl):
a folder of other files is refused rather than written into, and so is an OUT that is SRC,
inside it or around it. A damaged extract.json (or other state file) is named in one line with
the fix; crops already in OUT are never touched by that check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

import cv2
import numpy as np

from toonjax.data import fsguard
from toonjax.data import pack as packlib
from toonjax.errors import DatasetError
from toonjax.faces import align, anime, dedup, detect, panels, review
from toonjax.faces import crops as croplib

MANIFEST = "manifest.jsonl"
PAGES = "pages.jsonl"
SETTINGS = "extract.json"
KEEP = "keep.txt"
REJECT = "reject.txt"
STATE = ".extract_state.json"


@dataclasses.dataclass
class Options:
    detector: str = "auto"  # see toonjax.faces.detect: auto = animeface (the `anime` extra)
    conf: float = 0.7
    nms: float = 0.45
    classes: list[int] | None = None
    yolo_layout: str = "auto"
    imgsz: int | None = None
    min_neighbors: int = 5
    margin: float = 0.25
    size: int = 256
    min_face: int = 48
    border: str = "replicate"
    panels: str = "auto"
    min_panel: int = 64
    gutter_tol: int = 8
    blur_threshold: float = 50.0
    hash: str = "phash"
    dedup_threshold: int = 8

    def settings(self) -> dict:
        """What must match for a resumed run (thresholds of the final pass may change)."""
        d = dataclasses.asdict(self)
        for k in ("dedup_threshold", "hash", "blur_threshold"):
            d.pop(k)
        return d


@dataclasses.dataclass
class ExtractResult:
    pages_done: int
    pages_skipped: int
    unreadable: list[tuple[str, str]]
    crops_written: int
    kept: int
    rejected: int
    seconds: float


def _check(opts: Options) -> None:
    def bad(msg):
        raise DatasetError(msg)

    if not 0 <= opts.conf <= 1:
        bad(f"--conf {opts.conf}: must be in [0, 1]")
    if not 0 < opts.nms <= 1:
        bad(f"--nms {opts.nms}: must be in (0, 1]")
    if opts.margin < 0:
        bad(f"--margin {opts.margin}: must be >= 0")
    if not 8 <= opts.size <= 4096:
        bad(f"--size {opts.size}: must be in 8..4096")
    if opts.min_face < 1:
        bad(f"--min-face {opts.min_face}: must be >= 1")
    if opts.border not in croplib.BORDER_MODES:
        bad(f"--border {opts.border}: use one of {', '.join(croplib.BORDER_MODES)}")
    if opts.panels not in panels.PANEL_MODES:
        bad(f"--panels {opts.panels}: use one of {', '.join(panels.PANEL_MODES)}")
    if opts.hash not in dedup.HASHES:
        bad(f"--hash {opts.hash}: use one of {', '.join(dedup.HASHES)}")
    if opts.yolo_layout not in detect.YOLO_LAYOUTS:
        bad(f"--yolo-layout {opts.yolo_layout}: use one of {', '.join(detect.YOLO_LAYOUTS)}")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_lines(path: Path, records: list[dict]) -> None:
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines state file; damaged lines are dropped (their pages are
    redone), never fatal: the lines were written by this command, one page at a time."""
    if not path.exists():
        return []
    out = []
    # json.dumps writes ASCII only, so a byte that is not UTF-8 means a damaged line.
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: that page is redone
            continue
        if isinstance(rec, dict) and isinstance(rec.get("source"), str):
            out.append(rec)
    return out


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _valid_page(p: dict) -> bool:
    return p.get("status") == "ok" or (
        p.get("status") == "unreadable" and isinstance(p.get("reason", ""), str)
    )


def _valid_record(r: dict) -> bool:
    """Whether a manifest line has what `_finalize` and the review use (else its page is
    redone)."""
    crop = r.get("crop")
    if not (
        isinstance(r.get("id"), str)
        and _is_num(r.get("score"))
        and isinstance(crop, list)
        and len(crop) == 3
        and all(_is_num(v) for v in crop)
    ):
        return False
    if not r.get("file"):
        return True
    hashes = r.get("hashes")
    return (
        isinstance(r["file"], str)
        and _is_num(r.get("blur"))
        and isinstance(hashes, dict)
        and all(isinstance(v, str) for v in hashes.values())
        and {"phash", "phash_mirror", "dhash", "dhash_mirror", "sha256"} <= set(hashes)
    )


def _read_state(path: Path) -> dict:
    """The small state file (hash of the keep.txt last written); damaged counts as absent,
    which only makes the next run leave keep.txt alone and write keep.txt.new."""
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _fits(value, annotation: str) -> bool:
    """Whether a JSON value has the type of an Options field (annotation as a string)."""
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return False
    if annotation.startswith("list"):
        return isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        )
    if annotation.startswith("str"):
        return isinstance(value, str)
    if annotation.startswith("float"):
        return _is_num(value)
    if annotation.startswith("int"):
        return isinstance(value, int)
    return True


def _read_settings(path: Path, current: dict) -> dict:
    """OUT/extract.json, checked: a damaged file stops with one line naming it and the fix."""
    shown = fsguard.printable(path)
    fix = (
        "delete this file and run again to continue in OUT with the current options (the "
        "crops in OUT are kept), or use a new OUT to start over"
    )
    try:
        raw = json.loads(fsguard.read_regular_file(path, 16 << 20))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DatasetError(f"{shown}: damaged settings file (invalid JSON: {e}); {fix}") from e
    except (OSError, fsguard.RefusedFile) as e:
        raise DatasetError(f"{shown}: cannot read the settings file ({e}); {fix}") from e
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{shown}: damaged settings file (a JSON {type(raw).__name__}, not an object); {fix}"
        )
    types = {f.name: str(f.type) for f in dataclasses.fields(Options)}
    for key, value in raw.items():
        if key in current and not _fits(value, types.get(key, "")):
            raise DatasetError(
                f"{shown}: damaged settings file ({key!r} is {value!r}, expected "
                f"{types.get(key)}); {fix}"
            )
    return raw


def _check_out(out: Path) -> None:
    """OUT is new, empty, or made by this command; never a file or someone else's folder."""
    shown = fsguard.printable(out)
    fix = "choose another OUT or remove it yourself"
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        if os.path.lexists(out):
            raise DatasetError(f"{shown}: OUT is a broken symbolic link; {fix}") from None
        fsguard.check_writable(out, dest_name="OUT")
        return
    if not stat.S_ISDIR(mode):
        raise DatasetError(f"{shown}: OUT is a file, not a folder; {fix}")
    names = os.listdir(out)
    if names and SETTINGS not in names and PAGES not in names:
        raise DatasetError(
            f"{shown}: OUT is not a toonjax faces-extract folder (no {SETTINGS}) and is not "
            f"empty; {fix}"
        )


_TMP_FILE = re.compile(r"\..+\.tmp-(\d+)")


def _clean_tmp_files(out: Path) -> None:
    """Removes `.NAME.tmp-<pid>` files of killed runs (dead PID, regular files only)."""
    for folder in (out, out / "crops", out / "review"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            m = _TMP_FILE.fullmatch(e.name)
            if m and e.is_file(follow_symlinks=False) and not fsguard.pid_alive(int(m.group(1))):
                try:
                    os.unlink(e.path)
                except OSError:
                    pass


def crop_stem(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[-60:] or "page"
    # surrogateescape: a page name that is not valid UTF-8 hashes as its bytes on disk
    digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    return f"{safe}-{digest}"


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DatasetError("PNG encoding failed")
    return buf.tobytes()


def _r(v, nd=1):
    return [round(float(x), nd) for x in v]


def process_page(page: np.ndarray, rel: str, detector, opts: Options, out: Path):
    """Crops of one page: (manifest records, number of panels). Writes the crop files."""
    h, w = page.shape[:2]
    if opts.panels == "none":
        boxes = [(0, 0, w, h)]
    else:
        boxes = panels.find_panels(page, opts.panels, min_size=opts.min_panel, tol=opts.gutter_tol)
    stem = crop_stem(rel)
    records = []
    k = 0
    for px, py, pw, ph in boxes:
        sub = page[py : py + ph, px : px + pw]
        for det in detect.detect_tiled(detector, sub, nms_iou=opts.nms):
            det = det.shifted(px, py)
            face = det.box
            level = _level_crop(det, w, h, opts) if det.landmarks is not None else None
            if level is None:
                cb = croplib.square_box(face, w, h, opts.margin, opts.border)
                crop_box, padded, side = [cb.x, cb.y, cb.side], cb.padded_frac, cb.side
            else:
                quad, crop_box, padded = level
                side = crop_box[2]
            cid = f"{stem}-{k:03d}"
            k += 1
            rec = {
                "id": cid,
                "source": rel,
                "page_size": [w, h],
                "panel": [px, py, pw, ph],
                "face": _r(face),
                "crop": crop_box,
                "padded": round(padded, 4),
                "score": round(det.score, 4),
                "cls": det.cls,
                "file": None,
            }
            if level is not None:
                rec["angle"] = round(anime.roll_degrees(det.landmarks), 2)
                rec["quad"] = [_r(q) for q in quad]
                rec["landmarks"] = {n: _r(v) for n, v in sorted(det.landmarks.items())}
            if side < opts.min_face:
                rec["verdicts"] = {"size": f"too small ({side} < {opts.min_face} px)"}
                records.append(rec)
                continue
            if level is None:
                crop = croplib.resize_square(croplib.cut(page, cb, opts.border), opts.size)
            else:
                border = "replicate" if opts.border == "clip" else opts.border
                crop, _ = align.warp_quad(page, quad, opts.size, border=border)
            rec["blur"] = round(dedup.laplacian_var(crop), 2)
            rec["hashes"] = dedup.hashes(crop)
            rec["verdicts"] = {"size": "ok"}
            rec["file"] = f"crops/{cid}.png"
            _atomic_write(out / rec["file"], _encode_png(crop))
            records.append(rec)
    return records, len(boxes)


def _level_crop(det, page_w: int, page_h: int, opts: Options):
    """(quad, [x, y, side] of the same square unrolled, padded fraction) of a detection with
    landmarks: the box's square with margin, rolled so the eyes are level
    (`toonjax.faces.anime`); with border "clip" it shrinks about its centre into the page."""
    angle = anime.roll_degrees(det.landmarks)
    quad = anime.level_quad(det.box, angle, opts.margin)
    if opts.border == "clip":
        quad = anime.shrink_inside(quad, page_w, page_h)
    side = max(1, int(round(align.quad_side(quad))))
    cx, cy = quad.mean(0) + 0.5
    area = float(align.quad_side(quad) ** 2)
    page = np.array([[0, 0], [page_w, 0], [page_w, page_h], [0, page_h]], np.float32)
    inside, _ = cv2.intersectConvexConvex((quad + 0.5).astype(np.float32), page)
    padded = 0.0 if opts.border == "clip" else max(0.0, 1.0 - float(inside) / max(area, 1e-9))
    return quad, [int(round(cx - side / 2)), int(round(cy - side / 2)), side], padded


def _finalize(out: Path, opts: Options, records: list[dict]) -> tuple[int, int, str]:
    """Filter verdicts, duplicate groups, keep/reject lists, manifest, review pages."""
    cands = []
    for rec in records:
        v = rec.setdefault("verdicts", {})
        v.pop("blur", None)
        v.pop("duplicate", None)
        rec.pop("reason", None)
        if not rec.get("file"):
            rec["keep"] = False
            rec["reason"] = v.get("size", "too small")
            continue
        if rec["blur"] < opts.blur_threshold:
            v["blur"] = f"blurry ({rec['blur']:.1f} < {opts.blur_threshold:g})"
        else:
            v["blur"] = "ok"
            cands.append(rec)
    hk = opts.hash
    plain = [int(r["hashes"][hk], 16) for r in cands]
    mirror = [int(r["hashes"][f"{hk}_mirror"], 16) for r in cands]
    sha = [r["hashes"]["sha256"] for r in cands]
    for rec in cands:
        rec["verdicts"]["duplicate"] = "ok"
    for group in dedup.duplicate_groups(plain, mirror, sha, opts.dedup_threshold):
        members = [cands[i] for i in group]
        # biggest source face, then sharpest, then best score; ties: the first one seen
        best = max(members, key=lambda r: (r["crop"][2], r["blur"], r["score"]))
        for r in members:
            if r is best:
                continue
            same = r["hashes"]["sha256"] == best["hashes"]["sha256"]
            r["verdicts"]["duplicate"] = f"{'exact' if same else 'near'} duplicate of {best['id']}"
    reasons: dict[str, list[str]] = {}
    for rec in records:
        if not rec.get("file"):
            continue
        bad = [v for v in rec["verdicts"].values() if v != "ok"]
        rec["keep"] = not bad
        if bad:
            rec["reason"] = bad[0]
            key = bad[0].split(" (")[0].split(" of ")[0]
            reasons.setdefault(key, []).append(rec["file"])
    keep_text = "".join(f"{r['file']}\n" for r in records if r.get("keep"))
    reject_lines = []
    for key, files in reasons.items():
        reject_lines.append(f"# {key}\n")
        reject_lines += [f"{f}\n" for f in files]
    reject_text = "".join(reject_lines)

    state_path = out / STATE
    state = _read_state(state_path)
    keep_path = out / KEEP
    note = ""
    edited = (
        keep_path.exists()
        and hashlib.sha256(keep_path.read_bytes()).hexdigest() != state.get("keep_sha256")
        and keep_path.read_bytes() != keep_text.encode()
    )
    if edited:
        _atomic_write(out / f"{KEEP}.new", keep_text.encode())
        _atomic_write(out / f"{REJECT}.new", reject_text.encode())
        note = f"{keep_path} was edited; left as is, new lists in {KEEP}.new and {REJECT}.new"
    else:
        _atomic_write(keep_path, keep_text.encode())
        _atomic_write(out / REJECT, reject_text.encode())
        state["keep_sha256"] = hashlib.sha256(keep_text.encode()).hexdigest()
        _atomic_write(state_path, json.dumps(state).encode())
    manifest = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    _atomic_write(out / MANIFEST, manifest.encode())
    review.write_review(out, records)
    kept = sum(1 for r in records if r.get("keep"))
    return kept, sum(1 for r in records if r.get("file")) - kept, note


def extract(src, out, opts: Options, *, verbose: bool = True, log=None) -> ExtractResult:
    """Runs the whole extraction (see the module docstring); resumable on the same OUT."""
    log = log or print
    _check(opts)
    # `auto` is resolved first, so OUT's settings name the detector that made its crops.
    given = opts.detector
    opts = dataclasses.replace(opts, detector=detect.resolve_spec(opts.detector))
    # The model is loaded and checked before anything is read or written.
    detector = detect.load_detector(
        opts.detector,
        conf=opts.conf,
        nms_iou=opts.nms,
        classes=opts.classes,
        layout=opts.yolo_layout,
        imgsz=opts.imgsz,
        min_neighbors=opts.min_neighbors,
        # boxes whose crop would fall under --min-face are dropped anyway: don't search them
        min_size=max(24, int(opts.min_face / (1 + 2 * opts.margin))),
    )
    if verbose and opts.detector != given:
        log(f"detector: {opts.detector} (the default)")
    out = Path(out)
    # Before anything is written: OUT is not SRC (nor inside or around it), and is new, empty
    # or made by this command.
    fsguard.check_apart(src, out, dest_name="OUT")
    _check_out(out)
    try:
        return _extract(src, out, opts, detector, verbose=verbose, log=log)
    except OSError as e:  # reading pages is guarded inside; this is OUT refusing writes
        if e.errno in fsguard.WRITE_ERRNOS:
            raise fsguard.write_error(out, e, dest_name="OUT") from e
        raise


def _extract(src, out: Path, opts: Options, detector, *, verbose: bool, log) -> ExtractResult:
    with packlib.open_source(src) as source:
        images = packlib.list_images(source)
        if not images:
            raise DatasetError(f"{fsguard.printable(src)}: no image files found")
        settings_path = out / SETTINGS
        settings = opts.settings()
        if os.path.lexists(settings_path):
            # Checked before OUT is written to: a damaged file stops the run with OUT as it was.
            old = _read_settings(settings_path, settings)
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if diff:
                raise DatasetError(
                    f"{fsguard.printable(out)} was made with different settings "
                    f"({', '.join(diff)}); use a new OUT or the same options"
                )
        (out / "crops").mkdir(parents=True, exist_ok=True)
        _clean_tmp_files(out)
        if not os.path.lexists(settings_path):
            _atomic_write(settings_path, json.dumps(settings, indent=1).encode())

        done_pages = {p["source"]: p for p in _read_jsonl(out / PAGES) if _valid_page(p)}
        manifest = _read_jsonl(out / MANIFEST)
        for r in manifest:  # a page with a damaged manifest line is redone
            if not _valid_record(r):
                done_pages.pop(r["source"], None)
        records = [r for r in manifest if r["source"] in done_pages]
        if (out / MANIFEST).exists():  # drop records of a page cut short by a crash
            _atomic_write(
                out / MANIFEST,
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode(),
            )
        todo = [rel for rel in images if rel not in done_pages]
        skipped = len(images) - len(todo)
        if verbose and skipped:
            log(f"resuming: {skipped} of {len(images)} pages already processed")
        unreadable: list[tuple[str, str]] = [
            (p["source"], p.get("reason", "")) for p in done_pages.values() if p["status"] != "ok"
        ]
        t0 = time.perf_counter()
        n_crops = 0
        n_done = 0
        for i, rel in enumerate(todo):
            try:
                page = np.asarray(packlib.load_rgb(source.read(rel)))
            except (packlib.SkipImage, OSError, KeyError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                unreadable.append((rel, reason))
                _append_lines(
                    out / PAGES, [{"source": rel, "status": "unreadable", "reason": reason}]
                )
                if verbose:
                    log(f"unreadable page skipped: {fsguard.printable(rel)}: {reason}")
                continue
            recs, n_panels = process_page(page, rel, detector, opts, out)
            _append_lines(out / MANIFEST, recs)
            n_written = sum(1 for r in recs if r.get("file"))
            _append_lines(
                out / PAGES,
                [
                    {
                        "source": rel,
                        "status": "ok",
                        "size": [int(page.shape[1]), int(page.shape[0])],
                        "panels": n_panels,
                        "detections": len(recs),
                        "crops": n_written,
                    }
                ],
            )
            records.extend(recs)
            n_crops += n_written
            n_done += 1
            if verbose and (i + 1) % 50 == 0:
                log(f"{i + 1}/{len(todo)} pages, {n_crops} crops")
        secs = time.perf_counter() - t0
        kept, rejected, note = _finalize(out, opts, records)
    if verbose:
        rate_p = n_done / secs if secs > 0 else 0.0
        rate_c = n_crops / secs if secs > 0 else 0.0
        log(
            f"{n_done} pages in {secs:.1f} s ({rate_p:.2f} pages/s), {n_crops} crops "
            f"({rate_c:.2f} crops/s); {skipped} pages already done; "
            f"{len(unreadable)} unreadable"
        )
        for rel, reason in unreadable:
            log(f"  unreadable: {fsguard.printable(rel)}: {reason}")
        log(
            f"{kept} crops kept, {rejected} rejected (blur threshold {opts.blur_threshold:g}, "
            f"{opts.hash} distance <= {opts.dedup_threshold}); edit "
            f"{fsguard.printable(out / KEEP)}, review "
            f"{fsguard.printable(out / 'review' / 'index.html')}"
        )
        if note:
            log(note)
    return ExtractResult(n_done, skipped, unreadable, n_crops, kept, rejected, secs)
