"""Comic/webtoon face extraction: panels, detection (cascade or YOLO ONNX), crops, filters, review.

Entry point: `toonjax.faces.extract.extract` (the `toonjax faces extract` command).
"""
