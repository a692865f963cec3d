"""The pipeline: image (+ context) -> diagnosis, heatmap, report, citations; the same JSON
from ``Pipeline.analyze`` and ``assistant analyze``. Real released weights, real Br35H
images, and a real (tiny) literature index with a deterministic stand-in embedder."""

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from assistant.config import Settings
from assistant.imaging import UnsupportedFormatError, read_image
from assistant.pipeline import Pipeline
from assistant.report import Context
from assistant.retrieval import Searcher, build_index, ensure_index
from assistant.vision.checkpoint import load_bundle, release_path
from assistant.vision.infer import VisionModel
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest
from tests.retrieval.conftest import HPO_OBO, ICD_XML, MEDLINE_XML, HashingEmbedder, make_data_dir

pytestmark = pytest.mark.data

KEYS = {"study_id", "image_sha256", "study_uid_hash", "draft", "notice", "in_scope",
        "scope_reason", "diagnosis", "heatmap", "report", "citations", "citations_query",
        "citations_note", "image", "context", "models"}


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.from_settings(Settings(), citations=False)


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    """A tumour and a no-tumour test-fold image."""
    data_dir = Settings().data_dir
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    return {"tumour": data_dir / next(r.path for r in rows if r.label == 1),
            "no tumour": data_dir / next(r.path for r in rows if r.label == 0)}


def test_analysis_json(pipeline: Pipeline, images: dict[str, Path]) -> None:
    data = images["tumour"].read_bytes()
    context = Context.make("headache", 61, "male")
    analysis = pipeline.analyze(data, context)
    out = json.loads(json.dumps(analysis.to_dict()))  # plain JSON
    assert set(out) == KEYS and out["draft"] is True and "clinician" in out["notice"]
    assert out["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert out["diagnosis"]["label"] == "tumour" and out["in_scope"] is True
    assert out["diagnosis"]["probability"] >= out["diagnosis"]["threshold"] == 0.25
    assert out["context"] == {"indication": "headache", "age": 61, "sex": "male"}
    assert "age 61 years and sex male" in out["report"]["technique"]
    assert out["report"]["drafter"]["model"] == "vision-br35h-hybrid"
    assert out["report"]["text"].startswith(out["notice"])
    assert out["citations"] == [] and out["citations_note"] == "citations were not requested"
    vision = next(m for m in out["models"] if m["role"] == "vision")
    assert vision["sha256"] == hashlib.sha256(release_path(Settings()).read_bytes()).hexdigest()
    assert {m["role"] for m in out["models"]} == {"vision", "report"}
    # The heatmap is a PNG over the original frame.
    png = cv2.imdecode(np.frombuffer(base64.b64decode(out["heatmap"]["png_base64"]), np.uint8),
                       cv2.IMREAD_COLOR)
    assert png is not None and png.shape[:2] == (out["image"]["height"], out["image"]["width"])
    assert out["heatmap"]["location"]["side"] in ("image left", "image right",
                                                  "across the midline")
    assert pipeline.analyze(data).study_id != analysis.study_id


def test_analysis_json_bytes_are_the_dicts_json(pipeline: Pipeline, images: dict[str, Path],
                                                ) -> None:
    """``to_json`` (the body of /v1/analyze, the heatmap joined in as bytes) renders exactly
    what JSON-encoding ``to_dict`` renders, with and without a heatmap, and with context
    text that JSON must escape."""
    context = Context.make('headache "worst ever" \\ since Monday\n\u00e9', 61, "male")
    with_heat = pipeline.analyze(images["tumour"].read_bytes(), context)
    blank = cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()
    without = pipeline.analyze(blank)  # out of scope: no heatmap
    assert with_heat.heatmap_png is not None and without.heatmap_png is None
    for analysis in (with_heat, without):
        body = analysis.to_json()
        assert body == json.dumps(analysis.to_dict(), ensure_ascii=False, allow_nan=False,
                                  separators=(",", ":")).encode("utf-8")
        assert json.loads(body) == analysis.to_dict()


def test_the_diagnosis_is_the_vision_models(pipeline: Pipeline, images: dict[str, Path],
                                            ) -> None:
    vision = VisionModel(load_bundle(release_path(Settings())))
    for path in images.values():
        direct = vision.diagnose([vision.prepare(read_image(path).pixels)])[0]
        via = pipeline.analyze(path).diagnosis
        assert (via.label, via.in_scope) == (direct.label, direct.in_scope)
        assert via.probability == pytest.approx(direct.probability, abs=1e-6)


def test_analyze_many_matches_one_at_a_time(pipeline: Pipeline, images: dict[str, Path],
                                            ) -> None:
    paths = list(images.values())
    batch = pipeline.analyze_many(paths, study_ids=["a", "b"])
    assert [a.study_id for a in batch] == ["a", "b"]
    for path, analysis in zip(paths, batch, strict=True):
        single = pipeline.analyze(path)
        assert single.diagnosis.label == analysis.diagnosis.label
        assert single.report.findings == analysis.report.findings
    with pytest.raises(ValueError, match="one of each"):
        pipeline.analyze_many(paths, [None])


def test_a_batch_of_large_frames_runs_in_parts(images: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded frames over ``max_batch_frame_bytes`` are not all held at once: the batch
    runs in model passes of fewer images, with the same results."""
    paths = [*images.values(), *images.values()]  # four images
    whole = Pipeline.from_settings(Settings(), citations=False)
    one_frame = read_image(paths[0]).pixels.nbytes
    small = Settings(limits={"max_batch_frame_bytes": 2 * one_frame})
    parted = Pipeline.from_settings(small, citations=False)
    sizes: list[int] = []
    diagnose = parted.vision.diagnose

    def counted(inputs: list[Any], **kwargs: Any) -> Any:
        sizes.append(len(inputs))
        return diagnose(inputs, **kwargs)

    monkeypatch.setattr(parted.vision, "diagnose", counted)
    ids = ["a", "b", "c", "d"]
    expected = whole.analyze_many(paths, study_ids=ids)
    got = parted.analyze_many(paths, study_ids=ids)
    assert len(sizes) > 1 and max(sizes) < len(paths) and sum(sizes) == len(paths)
    assert [a.study_id for a in got] == ids
    for a, b in zip(got, expected, strict=True):
        assert a.diagnosis.label == b.diagnosis.label
        assert a.diagnosis.probability == pytest.approx(b.diagnosis.probability, abs=1e-6)
        assert a.report == b.report and a.location == b.location
        # the heat may differ in its last float bits between batch sizes: a colour level
        heat_a, heat_b = (cv2.imdecode(np.frombuffer(x.heatmap_png or b"", np.uint8),
                                       cv2.IMREAD_COLOR).astype(int) for x in (a, b))
        assert heat_a.shape == heat_b.shape
        assert np.abs(heat_a - heat_b).max() <= 8 and np.abs(heat_a - heat_b).mean() < 0.01


def test_the_geometry_gives_the_preprocessed_model_input(pipeline: Pipeline,
                                                        images: dict[str, Path]) -> None:
    """The pipeline takes the model input from the frame geometry it needs anyway: the
    same array as the full preprocessing, on real slices, colour, odd shapes and flat
    frames, with and without the crop."""
    from dataclasses import replace

    from assistant.imaging.preprocess import preprocess
    from assistant.report.evidence import frame_geometry

    rng = np.random.default_rng(0)
    frames = [read_image(p).pixels for p in images.values()]
    frames += [rng.random((97, 203, 3)).astype(np.float32) * 255,
               np.pad(rng.random((40, 60)), ((30, 5), (2, 50))).astype(np.float32),
               np.zeros((33, 17), np.float32), (rng.random((300, 280)) * 4095).astype(np.uint16)]
    cfg = pipeline.vision.bundle.preprocess
    for c in (cfg, replace(cfg, crop=False), replace(cfg, crop_threshold=0.3),
              replace(cfg, antialias=0.8)):
        for frame in frames:
            expected = preprocess(frame.astype(np.float32), c)
            assert np.array_equal(frame_geometry(frame, c).model_input(), expected)


def test_bad_bytes_raise_a_typed_error(pipeline: Pipeline) -> None:
    with pytest.raises(UnsupportedFormatError):
        pipeline.analyze(b"%PDF-1.4 not an image")


def test_without_an_index_citations_are_empty_and_say_why(tmp_path: Path,
                                                          images: dict[str, Path]) -> None:
    settings = Settings(index_dir=tmp_path / "no-index")
    pipeline = Pipeline.from_settings(settings)
    out = pipeline.analyze(images["tumour"]).to_dict()
    assert out["citations"] == [] and out["citations_query"] == "brain tumor MRI"
    assert "assistant index build" in out["citations_note"]


def _tiny_index_settings(root: Path) -> Settings:
    files = {}
    for name, text in (("a.xml", MEDLINE_XML), ("hp.obo", HPO_OBO), ("t.xml", ICD_XML)):
        (root / name).write_bytes(gzip.compress(text.encode()) if name == "a.xml"
                                  else text.encode())
        files[name] = root / name
    data_dir = make_data_dir(root / "data", {
        "medline": {"medline/a.xml.gz": files["a.xml"]},
        "hpo": {"hpo/hp.obo": files["hp.obo"]},
        "icd10cm": {"icd10cm/tabular.xml": files["t.xml"]}})
    return Settings(data_dir=data_dir, index_dir=root / "indexes")


def test_citations_come_from_the_index_once_per_query(tmp_path: Path,
                                                      images: dict[str, Path]) -> None:
    settings = _tiny_index_settings(tmp_path)
    embedder = HashingEmbedder()
    build_index(settings, embedder=embedder, progress=False)
    searcher = Searcher(ensure_index(settings, rebuild=False, embedder=embedder), embedder)
    pipeline = Pipeline(VisionModel(load_bundle(release_path(Settings()))), searcher)
    out = pipeline.analyze(images["tumour"]).to_dict()
    assert out["citations"] and out["citations_note"] is None
    for hit in out["citations"]:
        assert {"id", "source", "title", "snippet", "citation"} <= set(hit)
        assert hit["citation"] and hit["source"] in ("medline", "hpo", "icd10cm")
    assert {"retrieval-embedder", "retrieval-index"} <= {m["role"] for m in out["models"]}
    calls = embedder.calls
    again = pipeline.analyze(images["tumour"]).to_dict()
    assert again["citations"] == out["citations"] and embedder.calls == calls  # cached
    assert pipeline.analyze(images["no tumour"]).to_dict()["citations_query"] == (
        "normal brain MRI")


def test_a_citation_snapshot_gives_a_pipeline_without_an_index_the_same_analysis(
        tmp_path: Path, images: dict[str, Path]) -> None:
    """What a Ray actor gets: the driver's citations and retrieval model records, the
    same JSON as a pipeline that searches itself (the study id and time aside)."""
    settings = _tiny_index_settings(tmp_path)
    embedder = HashingEmbedder()
    build_index(settings, embedder=embedder, progress=False)
    searcher = Searcher(ensure_index(settings, rebuild=False, embedder=embedder), embedder)
    bundle = load_bundle(release_path(Settings()))
    searching = Pipeline(VisionModel(bundle), searcher)
    snapshot = searching.citation_snapshot()
    assert set(snapshot.citations) == {"tumour", "no tumour"}
    assert {m.role for m in snapshot.models} == {"retrieval-embedder", "retrieval-index"}
    given = Pipeline(VisionModel(bundle))
    given.use_citations(snapshot)
    calls = embedder.calls
    for name in ("tumour", "no tumour"):
        a = searching.analyze(images[name], study_id="s").to_dict()
        b = given.analyze(images[name], study_id="s").to_dict()
        a.pop("created", None), b.pop("created", None)
        assert b["citations"] and a == b
    assert embedder.calls == calls  # neither searched again
    with pytest.raises(ValueError, match="searches its own index"):
        searching.use_citations(snapshot)


def _cli(*args: str, index_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASSISTANT_INDEX_DIR": str(index_dir), "ASSISTANT_LOG_LEVEL": "WARNING",
           **extra}
    return subprocess.run([sys.executable, "-m", "assistant", "analyze", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_cli_prints_the_analysis_json(tmp_path: Path, images: dict[str, Path],
                                      pipeline: Pipeline) -> None:
    result = _cli(str(images["tumour"]), "--indication", "headache", "--age", "61", "--sex",
                  "Male", index_dir=tmp_path / "none")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = pipeline.analyze(images["tumour"], Context.make("headache", 61, "male")).to_dict()
    assert set(out) == KEYS
    for key in ("diagnosis", "context", "image", "in_scope"):
        assert out[key] == expected[key], key
    assert out["report"]["text"] == expected["report"]["text"]
    assert out["heatmap"]["png_base64"] == expected["heatmap"]["png_base64"]
    assert out["citations"] == [] and "assistant index build" in out["citations_note"]


def test_cli_writes_the_heatmap_to_a_file(tmp_path: Path, images: dict[str, Path]) -> None:
    target = tmp_path / "heat.png"
    result = _cli(str(images["no tumour"]), "--no-citations", "--heatmap", str(target),
                  index_dir=tmp_path / "none")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["heatmap"]["png_base64"] is None and out["heatmap"]["path"] == str(target)
    written = cv2.imread(str(target))
    assert written is not None
    assert written.shape[:2] == (out["image"]["height"], out["image"]["width"])
    assert out["citations_note"] == "citations were not requested"


def test_cli_makes_the_study_hash_key_only_for_a_study_uid(
        tmp_path: Path, images: dict[str, Path], dicom_path: Callable[[str], Path]) -> None:
    """A one-off analysis of a JPEG writes nothing into the data folder (it made the study
    hash key there, and failed where the working directory was read-only); a DICOM study's
    UID still gets its keyed hash."""
    data = tmp_path / "data"
    key = data / "study-hash.key"
    result = _cli(str(images["tumour"]), "--no-citations", index_dir=tmp_path / "none",
                  ASSISTANT_DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    assert not key.exists()
    result = _cli(str(dicom_path("MR_small.dcm")), "--no-citations",
                  index_dir=tmp_path / "none", ASSISTANT_DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    assert key.exists() and json.loads(result.stdout)["study_uid_hash"].startswith("hmac-")


@pytest.mark.parametrize(("args", "message"), [
    (("--age", "131"), "between 0 and 130"),
    (("--sex", "x"), "female, male, other, unknown"),
])
def test_cli_refuses_bad_context(tmp_path: Path, images: dict[str, Path],
                                 args: tuple[str, ...], message: str) -> None:
    result = _cli(str(images["tumour"]), "--no-citations", *args, index_dir=tmp_path)
    assert result.returncode == 2 and message in result.stderr


def test_cli_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "scan.png"
    bad.write_text("not an image")
    result = _cli(str(bad), "--no-citations", index_dir=tmp_path)
    assert result.returncode == 1 and "error:" in result.stderr


def _png(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.round(grey * 255).astype(np.uint8))
    assert ok
    return data.tobytes()


def test_a_dicom_header_naming_another_kind_of_image_is_out_of_scope(
        pipeline: Pipeline, images: dict[str, Path]) -> None:
    """The same pixels: in scope as an MR of the head, refused as a CT or a chest."""
    from tests.encodings import dicom, grey_levels

    grey = grey_levels(images["tumour"].read_bytes()).astype(np.uint16) * 16
    header = {"MR": (None, True), "OT": (None, True), "CT": (None, False),
              "US": (None, False), "mr": ("HEAD", True), " MR": ("Chest", False)}
    for modality, (body_part, in_scope) in header.items():
        d = pipeline.analyze(dicom(grey, modality=modality, body_part=body_part)).diagnosis
        assert d.in_scope is in_scope, (modality, body_part, d.scope_reason)
        if not in_scope:
            assert d.label is None and d.probability is None
            assert "DICOM header" in str(d.scope_reason)
    assert pipeline.analyze(dicom(grey)).diagnosis.label == "tumour"


def test_negatives_are_refused_and_the_images_themselves_are_not(pipeline: Pipeline) -> None:
    """Inverted grey levels (a photographic negative, or MONOCHROME1 read as MONOCHROME2
    upstream): the feature distance alone let about half of the Br35H negatives through."""
    data_dir = Settings().data_dir
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD][:24]
    fetched = [(data_dir / r.path).read_bytes() for r in rows]
    greys = [read_image(d).pixels for d in fetched]
    negatives = [_png(1.0 - (g if g.ndim == 2 else g.mean(axis=-1))) for g in greys]
    assert all(a.diagnosis.in_scope for a in pipeline.analyze_many(fetched))
    refused = [a.diagnosis for a in pipeline.analyze_many(negatives)]
    assert not any(d.in_scope for d in refused)
    by_polarity = [d for d in refused if "negative" in str(d.scope_reason)]
    assert by_polarity and all(d.label is None for d in by_polarity)
