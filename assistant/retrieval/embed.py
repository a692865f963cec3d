"""The sentence embedder: all-MiniLM-L6-v2 from the fetched data folder, never downloaded.

The files are verified against the data manifest (``require(data_dir, "minilm")``) when an
``Embedder`` is made; the model itself loads on the first ``encode``. Its ``fingerprint`` is
the manifest's sha256 of ``model.safetensors``: what an index records it was built with.
The torch thread count is left as the caller set it (``torch.set_num_threads``,
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from assistant.data.manifest import DataError, require

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDER_DIM = 384
MAX_SEQ_LENGTH = 256  # word pieces, [CLS] and [SEP] included: the model's training length
_WEIGHTS = "model.safetensors"
# With ``Embedder.traced`` (the service: trace_queries), up to this many texts are encoded
# by the traced, frozen BERT encoder instead of SentenceTransformer.encode: one query took
# 9.1 instead of 11.7 ms on one thread here (scripts/bench_search.py). Tracing costs about
# a second once, so one-off searches do without. Batches keep encode(), which sorts texts
# by length.
TRACED_MAX_TEXTS = 8
_ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The traced encoder's precision. "auto": bfloat16 where the CPU has bfloat16 instructions
# (AVX512-BF16 or AMX), float32 elsewhere, where bfloat16 is emulated. A query took 10.9-11.4
# instead of 13.8-15.5 ms on 2 threads here, its vector at cosine 0.99993 to float32's
# (the index's own 6-bit vectors are at 0.9993 to theirs). The traced bfloat16 copy costs
# about 90 MB more resident memory than the float32 trace, which shares the model's weights.
Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16")


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bfloat16 instructions (``/proc/cpuinfo`` flags, or ``cpuinfo``
    text); False where that cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags")
             for f in line.partition(":")[2].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


class TextEmbedder(Protocol):
    """What an index needs from an embedder (tests pass a tiny deterministic one)."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray: ...


def encode_queries(embedder: TextEmbedder, texts: Sequence[str]) -> np.ndarray:
    """Query vectors: through the embedder's query adapter where it has one
    (``adapter.AdaptedEmbedder``), else as passages are embedded."""
    method = getattr(embedder, "encode_queries", None)
    return np.asarray(method(texts) if method is not None else embedder.encode(texts))


def passage_embedder(embedder: TextEmbedder) -> TextEmbedder:
    """``embedder`` itself, or the one a query adapter wraps: what embeds passages (an
    adapter changes query vectors only)."""
    return getattr(embedder, "base", embedder)


def base_embedder(embedder: TextEmbedder) -> Embedder | None:
    """The MiniLM ``Embedder`` itself, or the one a query adapter wraps; None for others
    (tests' tiny embedders)."""
    base = passage_embedder(embedder)
    return base if isinstance(base, Embedder) else None


def trace_queries(embedder: TextEmbedder) -> bool:
    """Turn on the traced query encoder of ``embedder``'s ``base_embedder``; False when it
    has none."""
    base = base_embedder(embedder)
    if base is not None:
        base.traced = True
    return base is not None


def _offline() -> None:
    """No hub look-ups, whatever the environment says: every file is local."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


class Embedder:
    """all-MiniLM-L6-v2: texts -> L2-normalised float32 vectors of shape (N, 384)."""

    name = EMBEDDER_NAME
    dim = EMBEDDER_DIM

    def __init__(self, data_dir: Path, max_seq_length: int = MAX_SEQ_LENGTH,
                 traced: bool = False, precision: Precision = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        files = require(data_dir, "minilm")  # verified now; raises DataError if not fetched
        weights = [(path, sha) for path, sha in files.items() if path.name == _WEIGHTS]
        if len(weights) != 1:
            raise DataError(f"the minilm data source has no single {_WEIGHTS}: "
                            "run `assistant data fetch --only minilm`")
        path, sha = weights[0]
        self.folder = path.parent
        self._fingerprint = sha
        self.max_seq_length = max_seq_length
        self._model: SentenceTransformer | None = None
        self._traced: torch.jit.ScriptModule | None = None
        self.traced = traced
        self.precision: Precision = precision
        self._lock = threading.RLock()

    @property
    def fingerprint(self) -> str:
        """sha256 of ``model.safetensors``, as recorded in the data manifest."""
        return self._fingerprint

    @property
    def model(self) -> SentenceTransformer:
        """The SentenceTransformer, loaded on first use (about 3 s)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> SentenceTransformer:
        _offline()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
        model = SentenceTransformer(str(self.folder), device="cpu")
        model.max_seq_length = self.max_seq_length
        got = model.get_embedding_dimension()
        if got != self.dim:
            raise DataError(f"{self.folder} embeds into {got} dimensions, expected {self.dim}")
        log.info("loaded %s from %s", self.name, self.folder)
        return model

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """(N, 384) float32, each row of unit length; (0, 384) for no texts. A few texts
        (a search's query) go through the traced encoder, more through
        ``SentenceTransformer.encode``: the same vectors (a test compares them)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) <= TRACED_MAX_TEXTS and self.traced:
            return self._encode_traced(list(texts))
        vectors = self.model.encode(list(texts), batch_size=batch_size,
                                    show_progress_bar=progress, convert_to_numpy=True,
                                    normalize_embeddings=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)  # (N, 384)

    @property
    def traced_dtype(self) -> str:
        """The traced encoder's precision, "auto" resolved for this CPU."""
        if self.precision == "auto":
            return "bfloat16" if native_bf16() else "float32"
        return self.precision

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors exactly as a search makes them: one text at a time through the
        traced encoder when ``traced`` (padding a batch moves bfloat16 vectors a little);
        else ``encode``."""
        if not self.traced or len(texts) <= 1:
            return self.encode(texts)
        return np.concatenate([self.encode([text]) for text in texts])

    def _traced_encoder(self) -> torch.jit.ScriptModule:
        """The BERT encoder (a copy in ``traced_dtype``) traced and frozen on a padded pair
        of texts (so the padding mask is part of the graph), built on first use (about
        1 s)."""
        with self._lock:
            if self._traced is None:
                import copy

                import torch

                model = self.model
                features = model.preprocess(["a padded example", "a much longer padded "
                                             "example of a query text"])
                args = tuple(features[k] for k in _ENCODER_INPUTS)
                from transformers.utils import logging as hf_logging

                verbosity = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()  # a config note printed while tracing
                try:
                    with warnings.catch_warnings(), torch.no_grad():
                        warnings.simplefilter("ignore", torch.jit.TracerWarning)
                        warnings.simplefilter("ignore", FutureWarning)
                        bert: torch.nn.Module = model[0].model  # type: ignore[assignment]
                        if self.traced_dtype == "bfloat16":
                            bert = copy.deepcopy(bert).to(torch.bfloat16)
                        traced = torch.jit.trace(bert.eval(), args, strict=False,
                                                 check_trace=False)
                        self._traced = torch.jit.freeze(traced.eval())
                    log.info("query encoder traced in %s", self.traced_dtype)
                finally:
                    hf_logging.set_verbosity(verbosity)
            return self._traced

    def _encode_traced(self, texts: list[str]) -> np.ndarray:
        """Mean of the token vectors over the attention mask, then unit length: the
        model's own pooling and normalisation (modules 1 and 2 of all-MiniLM-L6-v2)."""
        import torch

        encoder = self._traced_encoder()
        features = self.model.preprocess(texts)
        with torch.no_grad():
            out = encoder(*(features[k] for k in _ENCODER_INPUTS))
            tokens = (out["last_hidden_state"] if isinstance(out, dict) else out[0]).float()
            mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)
