"""Fetch opus-recorder 8.0.5 from the npm registry for one test: the Opus decoder of the
original Unmute frontend (``decoderWorker.min.js`` and its ``.wasm``), which
tests/test_unmute_frontend_decoder.py runs in Chromium on the server's audio.

Stdlib only, idempotent, instant once cached. The tarball is pinned by the registry's sha512
integrity hash; the two files are unpacked into ``$UNMUTE_CACHE_DIR/opus-recorder-8.0.5``
(default ``~/.cache/unmute-trio``) by an atomic rename, so an interrupted run leaves nothing.
opus-recorder is MIT-licensed (its LICENSE.md is kept next to the files).

    python scripts/opus-recorder.py            fetch if needed, print the directory
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "8.0.5"
URL = f"https://registry.npmjs.org/opus-recorder/-/opus-recorder-{VERSION}.tgz"
SHA512 = "tBRXc9Btds7i3bVfA7d5rekAlyOcfsivt5vSIXHxRV1Oa+s6iXFW8omZ0Lm3ABWotVcEyKt96iIIUcgbV07YOw=="
FILES = ("dist/decoderWorker.min.js", "dist/decoderWorker.min.wasm", "LICENSE.md")


def cache_dir() -> Path:
    root = os.environ.get("UNMUTE_CACHE_DIR") or Path.home() / ".cache" / "unmute-trio"
    return Path(root) / f"opus-recorder-{VERSION}"


def fetch(target: Path) -> None:
    print(f"opus-recorder: fetching {URL}", file=sys.stderr)
    for attempt in range(1, 4):
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                data = response.read()
            break
        except OSError as e:
            if attempt == 3:
                raise SystemExit(f"opus-recorder: could not fetch {URL}: {e}") from None
            print(f"opus-recorder: {e}; retrying", file=sys.stderr)
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != SHA512:
        raise SystemExit(f"opus-recorder: sha512 mismatch for {URL}: {digest}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "files"
        staging.mkdir()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for name in FILES:
                member = tar.extractfile(f"package/{name}")
                if member is None:
                    raise SystemExit(f"opus-recorder: {name} missing from the tarball")
                (staging / Path(name).name).write_bytes(member.read())
        if target.exists():  # an older, incomplete copy
            shutil.rmtree(target)
        staging.rename(target)


def main() -> None:
    target = cache_dir()
    if not all((target / Path(name).name).is_file() for name in FILES):
        fetch(target)
    print(target)


if __name__ == "__main__":
    main()
