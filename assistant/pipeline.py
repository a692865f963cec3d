"""Image (+ clinical context) -> diagnosis, heatmap, drafted report and citations.

No web imports: the service, ``assistant analyze`` and batch drafting call the same
``Pipeline``. It is made once (the vision model loads then; the literature searcher is
optional) and ``analyze`` / ``analyze_many`` are safe to call from several threads.

Literature retrieval may be unavailable (no index built, or its files missing): the
analysis then carries no citations and ``citations_note`` says why; a diagnosis never
waits on, or fails because of, retrieval. Citations are searched with a fixed query per
diagnosis (``CITATION_QUERIES``): nothing from the image or the context is invented into
a query, and an out-of-scope image gets none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from assistant import __version__
from assistant.config import Limits, Settings
from assistant.data.manifest import DataError
from assistant.imaging import DecodedImage, read_image
from assistant.imaging.preprocess import to_grey
from assistant.report import (
    DRAFT_NOTICE,
    DRAFTER,
    DRAFTER_VERSION,
    Context,
    Evidence,
    HeatLocation,
    ImageQuality,
    ModelInfo,
    Report,
    draft_report,
    frame_geometry,
    heat_location,
    heat_on_frame,
    image_quality,
)
from assistant.report.evidence import FrameGeometry
from assistant.retrieval.index import IndexUnusableError
from assistant.retrieval.search import Hit, Searcher
from assistant.security import load_study_key, study_hash
from assistant.vision.checkpoint import VisionBundle, load_bundle, release_path
from assistant.vision.infer import Diagnosis, VisionModel

log = logging.getLogger(__name__)

CITATION_QUERIES = {"tumour": "brain tumor MRI", "no tumour": "normal brain MRI"}
CITATIONS_K = 5
OVERLAY_MAX_SIDE = 512  # pixels of the heatmap overlay's longer side, at most
OVERLAY_ALPHA = 0.45
# What the checkpoint's recorded data source is, in words (``provenance["data_source"]``).
TRAINING_DATA = {"br35h": "Br35H brain MRI slices"}


@dataclass(frozen=True)
class ModelRecord:
    role: str  # "vision", "report", "retrieval-embedder", "retrieval-query-adapter",
    # "retrieval-index"
    name: str
    version: str | None
    sha256: str | None  # of the weights (or, for the index, of its passages)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "version": self.version,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Citations:
    hits: tuple[Hit, ...] = ()
    query: str | None = None
    note: str | None = None  # why there are none, when there are none

    def to_list(self) -> list[dict[str, Any]]:
        return [{"id": h.id, "source": h.source, "title": h.title, "snippet": h.snippet,
                 "citation": h.citation, "url": h.url, "year": h.year} for h in self.hits]


@dataclass(frozen=True)
class CitationSnapshot:
    """Each label's citations and the retrieval models that found them, searched once by
    a batch driver and handed to pipelines that open no index (Ray actors): an actor then
    loads neither the literature index nor the embedder, and its analyses carry the same
    citations and model records as the embedded engine's."""

    citations: dict[str, Citations]  # by diagnosis label
    models: tuple[ModelRecord, ...]  # the retrieval records of the searching pipeline


@dataclass(frozen=True)
class Analysis:
    """One image's result; ``to_dict`` is the JSON of ``/v1/analyze`` and
    ``assistant analyze``."""

    study_id: str
    image_sha256: str
    diagnosis: Diagnosis
    positive_label: str
    report: Report
    heatmap_png: bytes | None  # the heat over the image, PNG; None when out of scope
    heat_method: str
    location: HeatLocation | None
    meta: dict[str, Any]
    quality: ImageQuality
    context: Context
    citations: Citations
    models: tuple[ModelRecord, ...]
    # HMAC of the DICOM StudyInstanceUID under the installation's key (never the UID itself);
    # None for PNG / JPEG, or a DICOM without one.
    study_uid_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        png = None if self.heatmap_png is None else base64.b64encode(self.heatmap_png)
        return self._dict(None if png is None else png.decode("ascii"))

    def to_json(self) -> bytes:
        """``to_dict()`` as compact UTF-8 JSON, the body of ``/v1/analyze``. The heatmap's
        base64 text (about 140 KB) is joined in as bytes instead of passing through the
        JSON encoder's string scan, which held the GIL for most of the cost of rendering an
        analysis: base64 holds nothing JSON escapes."""
        if self.heatmap_png is None:
            return _compact_json(self.to_dict())
        marker = secrets.token_hex(16)  # random: no text of the study can contain it
        head, sep, tail = _compact_json(self._dict(marker)).partition(f'"{marker}"'.encode())
        if not sep or marker.encode() in tail:
            return _compact_json(self.to_dict())
        return b"".join((head, b'"', base64.b64encode(self.heatmap_png), b'"', tail))

    def _dict(self, png_base64: str | None) -> dict[str, Any]:
        d = self.diagnosis
        heatmap = None
        if png_base64 is not None:
            heatmap = {"method": self.heat_method, "format": "png",
                       "location": self.location.to_dict() if self.location else None,
                       "png_base64": png_base64}
        return {
            "study_id": self.study_id, "image_sha256": self.image_sha256,
            "study_uid_hash": self.study_uid_hash, "draft": True, "notice": DRAFT_NOTICE,
            "in_scope": d.in_scope, "scope_reason": d.scope_reason,
            "diagnosis": {"label": d.label, "probability": d.probability,
                          "threshold": d.threshold, "positive_label": self.positive_label,
                          "ood_distance": d.ood_distance},
            "heatmap": heatmap,
            "report": self.report.to_dict(),
            "citations": self.citations.to_list(),
            "citations_query": self.citations.query,
            "citations_note": self.citations.note,
            "image": {**self.meta, "quality": self.quality.to_dict()},
            "context": self.context.to_dict(),
            "models": [m.to_dict() for m in self.models],
        }


def _compact_json(content: Any) -> bytes:
    """JSON as Starlette's ``JSONResponse`` renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def study_key(settings: Settings) -> bytes:
    """The HMAC key of study UIDs: the configured secret, else the installation's key file
    (generated on first use, mode 0600)."""
    sec = settings.security
    assert sec.study_hash_key_file is not None  # Settings resolves it
    secret = sec.study_hash_secret.get_secret_value() if sec.study_hash_secret else None
    return load_study_key(secret, sec.study_hash_key_file)


def open_retrieval(settings: Settings) -> tuple[Searcher | None, str | None]:
    """The literature searcher over the built index, or None and why it is unavailable.
    Never builds the index (that takes hours here): ``assistant index build`` does."""
    from assistant.retrieval.build import open_searcher

    try:
        return open_searcher(settings, rebuild=False), None
    except (IndexUnusableError, DataError) as exc:
        log.warning("citations unavailable: %s", exc)
        return None, f"literature retrieval unavailable: {exc}"


def overlay_png(pixels: npt.NDArray[np.floating[Any]], geometry: FrameGeometry,
                heat: npt.NDArray[np.float32]) -> bytes:
    """The heat grid laid over the reader's frame (grey), longer side at most
    OVERLAY_MAX_SIDE, as PNG bytes."""
    grey = (np.clip(to_grey(pixels.astype(np.float32, copy=False)), 0, 1) * 255).astype(np.uint8)
    colour = cv2.applyColorMap((heat_on_frame(heat, geometry) * 255).astype(np.uint8),
                               cv2.COLORMAP_JET)  # (H, W, 3) BGR
    blended = cv2.addWeighted(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 1 - OVERLAY_ALPHA,
                              colour, OVERLAY_ALPHA, 0)
    scale = OVERLAY_MAX_SIDE / max(blended.shape[:2])
    if scale < 1:
        size = (max(1, round(blended.shape[1] * scale)), max(1, round(blended.shape[0] * scale)))
        blended = cv2.resize(blended, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", blended)
    if not ok:
        raise RuntimeError("OpenCV could not encode the heatmap overlay as PNG")
    return encoded.tobytes()


def model_info(bundle: VisionBundle, heat_method: str) -> ModelInfo:
    """What a report may say about the model, from its checkpoint."""
    source = str(bundle.provenance.get("data_source", "data not recorded"))  # "br35h (x==1)"
    key, _, package = source.partition(" ")
    return ModelInfo(name=bundle.name, sha256=bundle.sha256, labels=tuple(bundle.labels),
                     input_size=bundle.model.config.image_size, grid=bundle.model.config.grid,
                     heat_method=heat_method, training_data=TRAINING_DATA.get(key, source),
                     training_source=package.strip("()") or "source not recorded")


class Pipeline:
    """Loaded once; turns image bytes (+ context) into ``Analysis`` objects."""

    def __init__(self, vision: VisionModel, searcher: Searcher | None = None,
                 retrieval_note: str | None = None, limits: Limits | None = None,
                 vision_version: str | None = None, k: int = CITATIONS_K,
                 study_key: bytes | Callable[[], bytes] | None = None) -> None:
        self.vision = vision
        # The HMAC key of study UIDs, or what loads it when a first UID comes (a PNG or a
        # JPEG has none: nothing to read or create); None: UIDs are not kept.
        self._study_key = study_key
        self._key_lock = threading.Lock()
        self.searcher = searcher
        self.retrieval_note = retrieval_note or (
            None if searcher else "literature retrieval was not configured")
        self.limits = limits or Limits()
        self.k = k
        self.info = model_info(vision.bundle, vision.heat_method)
        self.models = self._models(vision_version)
        self._hits: dict[str, tuple[Hit, ...]] = {}
        self._snapshot: CitationSnapshot | None = None

    @classmethod
    def from_settings(cls, settings: Settings, citations: bool = True,
                      lazy_study_key: bool = False) -> Pipeline:
        """The release (or ``settings.vision_checkpoint``) vision model and, when
        ``citations``, the literature index if it is built. ``lazy_study_key``: the study
        hash key is read (or made) when a first study UID comes, not now (a one-off
        analysis of a PNG writes nothing into the data folder)."""
        path = settings.vision_checkpoint or release_path(settings)
        release = path == release_path(settings)
        version = f"release of assistant {__version__}" if release else None
        searcher, note = (open_retrieval(settings) if citations
                          else (None, "citations were not requested"))
        return cls(VisionModel(load_bundle(path)), searcher, note, settings.limits, version,
                   study_key=(partial(study_key, settings) if lazy_study_key
                              else study_key(settings)))

    @property
    def study_key(self) -> bytes | None:
        """The HMAC key of study UIDs (loaded, or made, on first use when given lazily)."""
        with self._key_lock:
            if callable(self._study_key):
                self._study_key = self._study_key()
            return self._study_key

    def _models(self, vision_version: str | None) -> tuple[ModelRecord, ...]:
        models = [ModelRecord("vision", self.info.name, vision_version, self.info.sha256),
                  ModelRecord("report", DRAFTER, DRAFTER_VERSION, None)]
        if self.searcher is not None:
            embedder, manifest = self.searcher.embedder, self.searcher.index.manifest
            if embedder is not None:
                models.append(ModelRecord("retrieval-embedder", embedder.name, None,
                                          embedder.fingerprint))
                adapter = getattr(embedder, "adapter", None)
                if adapter is not None:
                    models.append(ModelRecord("retrieval-query-adapter", "query adapter",
                                              None, adapter.sha256))
            models.append(ModelRecord("retrieval-index", f"literature ({manifest.index_kind})",
                                      manifest.created, manifest.corpus_sha256))
        return tuple(models)

    def analyze(self, image: bytes | Path, context: Context | None = None,
                study_id: str | None = None) -> Analysis:
        """One image (PNG, JPEG or DICOM bytes, or a path) -> its analysis. Bad images
        raise ``ImageInputError``s (the service maps them to 413 / 415 / 422)."""
        return self.analyze_many([image], [context], [study_id] if study_id else None)[0]

    def analyze_many(self, images: Sequence[bytes | Path],
                     contexts: Sequence[Context | None] | None = None,
                     study_ids: Sequence[str] | None = None) -> list[Analysis]:
        """Several images in one model batch, in parts when their decoded frames exceed
        ``limits.max_batch_frame_bytes``; the first bad image raises."""
        contexts = list(contexts) if contexts is not None else [None] * len(images)
        ids = list(study_ids) if study_ids is not None else [uuid.uuid4().hex for _ in images]
        if not len(images) == len(contexts) == len(ids):
            raise ValueError(f"{len(images)} images, {len(contexts)} contexts and "
                             f"{len(ids)} study ids: give one of each per image")
        start = time.perf_counter()
        out: list[Analysis] = []
        part: list[tuple[DecodedImage, str, Context | None, str]] = []
        held = 0  # bytes of the decoded frames in ``part``
        for image, ctx, sid in zip(images, contexts, ids, strict=True):
            img, sha = self._read(image)
            if part and held + img.pixels.nbytes > self.limits.max_batch_frame_bytes:
                out += self._analyze_part(part)  # large frames: the batch runs in parts
                part, held = [], 0
            part.append((img, sha, ctx, sid))
            held += img.pixels.nbytes
        out += self._analyze_part(part)
        log.info("analysed %d image(s) in %.2f s", len(out), time.perf_counter() - start)
        return out

    def _analyze_part(self, part: Sequence[tuple[DecodedImage, str, Context | None, str]]
                      ) -> list[Analysis]:
        """Decoded images through one model pass, then each composed."""
        cfg = self.vision.bundle.preprocess
        geometries = [frame_geometry(img.pixels, cfg) for img, _, _, _ in part]
        # A grey model takes its input from the geometry's normalised frame and crop (the
        # same steps; a test compares them), a colour one from the full preprocessing.
        inputs = [g.model_input() if cfg.grey else self.vision.prepare(img.pixels)
                  for g, (img, _, _, _) in zip(geometries, part, strict=True)]
        diagnoses = self.vision.diagnose(
            inputs, heatmap=True, refused=self.vision.header_reasons([i.meta for i, *_ in part]))
        diagnoses = self.vision.refuse_negatives([i.pixels for i, *_ in part], diagnoses)
        return [self._compose(img, sha, d, ctx or Context(), sid, g)
                for (img, sha, ctx, sid), d, g in zip(part, diagnoses, geometries, strict=True)]

    def _read(self, image: bytes | Path) -> tuple[DecodedImage, str]:
        decoded = read_image(image, self.limits)  # checks the size before reading a path
        data = image.read_bytes() if isinstance(image, Path) else image
        return decoded, hashlib.sha256(data).hexdigest()

    def _compose(self, image: DecodedImage, sha: str, diagnosis: Diagnosis, context: Context,
                 study_id: str, geometry: FrameGeometry) -> Analysis:
        quality = image_quality(image.pixels, geometry)
        location, png = None, None
        if diagnosis.heat is not None:
            location = heat_location(diagnosis.heat, geometry.head_on_input())
            png = overlay_png(image.pixels, geometry, diagnosis.heat)
        report = draft_report(Evidence(diagnosis, self.info, quality, location, image.meta,
                                       context))
        log.info("study %s: in scope %s, label %s, p %s", study_id, diagnosis.in_scope,
                 diagnosis.label, None if diagnosis.probability is None
                 else f"{diagnosis.probability:.3f}")
        uid = image.study_uid  # the key is read (or made) only for a study that has one
        uid_hash = study_hash(key, uid) if uid and (key := self.study_key) is not None else None
        return Analysis(study_id, sha, diagnosis, self.info.positive, report, png,
                        self.info.heat_method, location, image.meta.to_dict(), quality,
                        context, self.citations(diagnosis), self.models, uid_hash)

    def citation_snapshot(self) -> CitationSnapshot:
        """Every label's citations, searched now (see ``CitationSnapshot``)."""
        threshold = self.vision.bundle.threshold
        found = {label: self.citations(Diagnosis(True, None, label, threshold, threshold, 0.0))
                 for label in CITATION_QUERIES}
        return CitationSnapshot(found, tuple(m for m in self.models
                                             if m.role.startswith("retrieval")))

    def use_citations(self, snapshot: CitationSnapshot) -> None:
        """Answer citations from ``snapshot`` (a pipeline without a searcher)."""
        if self.searcher is not None:
            raise ValueError("this pipeline searches its own index")
        self._snapshot = snapshot
        self.models = self.models + snapshot.models

    def citations(self, diagnosis: Diagnosis) -> Citations:
        """Literature for the diagnosis: a fixed query per label, searched once and kept."""
        if not diagnosis.in_scope or diagnosis.label is None:
            return Citations(note="no diagnosis was given, so no literature was searched")
        if self._snapshot is not None and diagnosis.label in self._snapshot.citations:
            return self._snapshot.citations[diagnosis.label]
        query = CITATION_QUERIES.get(diagnosis.label)
        if query is None:
            return Citations(note=f"no literature query is defined for {diagnosis.label!r}")
        if self.searcher is None:
            return Citations(query=query, note=self.retrieval_note)
        if query not in self._hits:
            try:
                self._hits[query] = tuple(self.searcher.search(query, k=self.k))
            except (IndexUnusableError, DataError, OSError) as exc:
                log.warning("literature search failed: %s", exc)
                return Citations(query=query, note=f"literature search failed: {exc}")
        hits = self._hits[query]
        return Citations(hits, query, None if hits else "the search found nothing")
