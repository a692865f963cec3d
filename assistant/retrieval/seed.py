"""A committed, compact copy of the passage embeddings: a fresh machine builds the index
from it in minutes instead of embedding the corpus for an hour on two cores.

``indexes/literature.seed/`` holds ``vectors.faiss``, a FAISS scalar-quantised store of the
passage vectors (4 or 8 bits per dimension), and ``seed.json``, which names exactly what
they are embeddings of: the embedder's sha256 and the digest of the embedded texts. A
build uses the seed only when both match what it is about to embed (same corpus, same
passage settings, same embedder); otherwise it embeds, as without a seed. The decoded
vectors are renormalised to unit length; what quantisation costs in ranking quality is
measured by ``assistant eval retrieval`` (README, retrieval results).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

SEED_SUFFIX = ".seed"
VECTORS_FILE = "vectors.faiss"
SEED_FILE = "seed.json"
_QUANTIZERS = {8: faiss.ScalarQuantizer.QT_8bit, 6: faiss.ScalarQuantizer.QT_6bit,
               4: faiss.ScalarQuantizer.QT_4bit}


@dataclass(frozen=True)
class SeedInfo:
    embedder: str
    embedder_sha256: str
    texts_sha256: str  # digest of the embedded texts (build.py: passages and title flag)
    count: int
    dim: int
    bits: int  # per dimension


def seed_path(index_dir: Path, name: str) -> Path:
    return index_dir / f"{name}{SEED_SUFFIX}"


def write_seed(directory: Path, vectors: np.ndarray, info: SeedInfo) -> int:
    """Quantise ``vectors`` (N, d) into ``directory`` (replaced atomically); returns the
    size in bytes of the vector file."""
    if info.bits not in _QUANTIZERS:
        raise ValueError(f"bits must be one of {sorted(_QUANTIZERS)}, got {info.bits}")
    if vectors.shape != (info.count, info.dim):
        raise ValueError(f"vectors of shape {vectors.shape}, the seed says "
                         f"{(info.count, info.dim)}")
    store = faiss.IndexScalarQuantizer(info.dim, _QUANTIZERS[info.bits],
                                       faiss.METRIC_INNER_PRODUCT)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    store.train(data)
    store.add(data)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        faiss.write_index(store, str(tmp / VECTORS_FILE))
        (tmp / SEED_FILE).write_text(json.dumps(asdict(info), indent=1) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.replace(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (directory / VECTORS_FILE).stat().st_size


def read_seed(directory: Path, embedder_sha256: str, texts_sha256: str, count: int
              ) -> np.ndarray | None:
    """The seed's vectors (count, d), unit length, if it holds exactly the embeddings
    wanted; None (and a log line saying why) otherwise."""
    try:
        info = SeedInfo(**json.loads((directory / SEED_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        log.warning("ignoring the index seed in %s: unreadable (%s)", directory, exc)
        return None
    wanted = (embedder_sha256, texts_sha256, count)
    if (info.embedder_sha256, info.texts_sha256, info.count) != wanted:
        log.info("the index seed in %s holds other embeddings (another corpus, passage "
                 "settings or embedder): embedding instead", directory)
        return None
    try:
        store = faiss.read_index(str(directory / VECTORS_FILE))
    except RuntimeError as exc:
        log.warning("ignoring the index seed in %s: %s", directory, exc)
        return None
    if store.ntotal != count or store.d != info.dim:
        log.warning("ignoring the index seed in %s: %d vectors of dimension %d stored",
                    directory, store.ntotal, store.d)
        return None
    vectors = store.reconstruct_n(0, count)  # (N, d) float32, dequantised
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    log.info("using %d seed vectors (%d bits) from %s", count, info.bits, directory)
    return vectors / np.where(norms > 0, norms, 1.0)
