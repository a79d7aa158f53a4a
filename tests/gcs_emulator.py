"""A local Cloud Storage server for the gs:// workdir tests: `python gcs_emulator.py PORT BUCKET`.

gcp-storage-emulator (BSD-3) with three gaps filled that tensorstore's gcs driver relies on:
- reads answer with the object's generation in `x-goog-generation` (tensorstore's cache
  validation reads it from there);
- `ifGenerationMatch` / `ifGenerationNotMatch` preconditions on reads, uploads and deletes
  (412, or 304 for a read whose generation did not change), which OCDBT's manifest updates use;
- one request at a time: its in-memory store is not safe for concurrent writers.
Prints "ready" once it listens.
"""

import sys
import threading
import time
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_LOCK = threading.Lock()


def _generation(storage, bucket: str, name: str) -> int:
    try:
        return int(storage.get_file_obj(bucket, name).get("generation") or 0)
    except NotFound:
        return 0


def _object_name(request) -> str:
    if "object_id" in request.params:
        return request.params["object_id"]
    if "name" in request.query:  # a media upload
        return request.query["name"][0]
    return (request.data or {}).get("meta", {}).get("name", "")  # a multipart upload


def _guarded(handler, read: bool = False):
    def run(request, response, storage, *args, **kwargs):
        with _LOCK:
            bucket = request.params["bucket_name"]
            name = _object_name(request)
            gen = _generation(storage, bucket, name)
            want = request.query.get("ifGenerationMatch")
            if want is not None and int(want[0]) != gen:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
            unchanged = request.query.get("ifGenerationNotMatch")
            if unchanged is not None and int(unchanged[0]) == gen:
                response.status = (
                    HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
                )
                return None
            if read and gen:
                response["x-goog-generation"] = str(gen)
            return handler(request, response, storage, *args, **kwargs)

    return run


objects.download = _guarded(objects.download, read=True)
objects.insert = _guarded(objects.insert)
objects.delete = _guarded(objects.delete)

from gcp_storage_emulator.server import create_server  # noqa: E402 -- after the patches

if __name__ == "__main__":
    server = create_server(
        "127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket=sys.argv[2]
    )
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)
