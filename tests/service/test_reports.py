"""POST /v1/reports/draft over HTTP against the real server and the release decoder, and the
draft micro-batcher's size."""

import re
from pathlib import Path

import httpx
import pytest

from assistant.report.decoder.bundle import load_report_bundle


def _draft(server: str, body: object) -> httpx.Response:
    return httpx.post(f"{server}/v1/reports/draft", json=body, timeout=60)


def test_a_draft_follows_its_findings_and_says_it_is_a_draft(server: str) -> None:
    normal = _draft(server, {"findings": [{"code": "normal"}], "indication": "chest pain"})
    assert normal.status_code == 200, normal.text
    body = normal.json()
    assert body["draft"] is True and "clinician" in body["notice"]
    assert body["given_findings"] == ["normal"] and body["asserted_findings"] == ["normal"]
    assert body["added"] == [] and body["missing"] == []
    assert isinstance(body["from_training_report"], bool)
    assert body["model"]["name"] == "report-iu-xray" and len(body["model"]["sha256"]) == 64
    effusion = _draft(server, {"findings": [{"code": "Pleural Effusion/left", "probability": 0.9},
                                            {"code": "Cardiomegaly/mild"}]}).json()
    given, got = set(effusion["given_findings"]), set(effusion["asserted_findings"])
    assert given == {"pleural effusion", "cardiomegaly"} and effusion["text"] != body["text"]
    # Whatever the draft leaves out or adds is named, so the clinician sees it.
    assert set(effusion["missing"]) == given - got
    assert set(effusion["added"]) == got - given - {"normal"}
    assert "cardiomegaly" in got


def test_completion_borrows_sentences_with_their_source_on_request(server: str) -> None:
    from assistant.report.decoder.data import read_split

    study = {"findings": [{"code": "Hernia, Hiatal"}, {"code": "Cardiomegaly/mild"}],
             "indication": "chest pain"}
    plain = _draft(server, {**study, "complete": False}).json()
    done = _draft(server, {**study, "complete": True}).json()
    assert plain["borrowed_sentences"] == [] and plain["dropped_sentences"] == []
    # Whatever the decoded text left out is borrowed, each sentence named with the
    # training report it comes from, and nothing given is left missing that was borrowed.
    assert "hiatal hernia" in plain["missing"], plain["text"]
    borrowed = done["borrowed_sentences"]
    assert [b["finding"] for b in borrowed] == ["hiatal hernia"]
    assert borrowed[0]["sentence"] in done["text"] and done["missing"] == []
    assert read_split()[borrowed[0]["source_uid"]] == "train"
    assert done["text"].startswith(plain["text"].rstrip(". "))


def test_completion_without_training_reports_is_422_and_other_drafts_go_on(
        tmp_path: Path) -> None:
    """A decoder that reads no training reports (``ASSISTANT_REPORT_CHECKPOINT``) drafts,
    and says clearly that it cannot complete."""
    from assistant.report.decoder.bundle import ReportBundle
    from assistant.report.decoder.model import DecoderConfig, ReportDecoder
    from assistant.report.decoder.vocab import Vocab
    from tests.service.conftest import run_server

    text = Vocab.build([["mild", "cardiomegaly", "."]], min_count=1)
    cond = Vocab.build([["T:cardiomegaly", "M:mild"]], min_count=1)
    checkpoint = tmp_path / "plain.pt"
    ReportBundle(ReportDecoder(DecoderConfig(len(text), len(cond), width=32, heads=2,
                                             encoder_layers=1, decoder_layers=1,
                                             max_len=16)), text, cond).save(checkpoint)
    env = {"ASSISTANT_INDEX_DIR": str(tmp_path / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false",
           "ASSISTANT_REPORT_CHECKPOINT": str(checkpoint)}
    with run_server(tmp_path, env) as base:
        study = {"findings": [{"code": "Cardiomegaly/mild"}]}
        refused = _draft(base, {**study, "complete": True})
        assert refused.status_code == 422, refused.text
        assert "no training reports" in refused.json()["error"]["message"]
        drafted = _draft(base, study)
        assert drafted.status_code == 200, drafted.text
        assert drafted.json()["borrowed_sentences"] == []
        assert drafted.json()["model"]["sha256"] == load_report_bundle(checkpoint).sha256


@pytest.mark.parametrize(("body", "words"), [
    ({"findings": []}, "findings"),
    ({"findings": [{"code": "   "}]}, "empty finding code"),
    ({"findings": [{"code": "normal", "probability": 2}]}, "probability"),
    ({"findings": [{"code": "Cardiomegaly"}] * 17}, "findings"),
    ({"findings": [{"code": "normal"}], "indication": "x" * 501}, "indication"),
    ({"findings": [{"code": "normal"}], "indication": "cough\x1b[2J"}, "control"),
    # a code the decoder never saw is named, not drafted as if nothing were found
    ({"findings": [{"code": "Pulmonary Embolism", "probability": 0.95}]},
     "'pulmonary embolism'"),
    ({"findings": [{"code": "Pneumotorax/right"}]}, "did you mean 'pneumothorax'"),
    ({"findings": [{"code": "Cardiomegaly/huge"}, {"code": "normal"}]}, "modifier 'huge'"),
    ({"findings": [{"code": "Pneumothorax/right", "probability": 0.1}]}, "probability of at"),
    ("not an object", "valid dictionary"),
    # a misspelt field or a number as a string is refused, not read as unset ("complet":
    # true had drafted without completion, "0.9" had been taken as 0.9)
    ({"findings": [{"code": "normal"}], "complet": True}, "complet"),
    ({"findings": [{"code": "normal", "probability": "0.9"}]}, "probability"),
    ({"findings": [{"code": "normal"}], "complete": "yes"}, "complete"),
    # normal stated beside a finding: no training report is coded so (the decoder had
    # written "no pneumothorax" for Pneumothorax/right given with normal); a code twice
    ({"findings": [{"code": "Pneumothorax/right"}, {"code": "normal", "probability": 0.9}]},
     "`normal` is stated"),
    ({"findings": [{"code": "Cardiomegaly", "probability": 0.9},
                   {"code": "cardiomegaly", "probability": 0.1}]}, "given twice"),
    # one finding with two severities (a draft had read "Mild mild cardiomegaly")
    ({"findings": [{"code": "Cardiomegaly/mild"}, {"code": "Cardiomegaly/severe"}]},
     "two severities"),
])
def test_bad_findings_are_422(server: str, body: object, words: str) -> None:
    response = _draft(server, body)
    assert response.status_code == 422, response.text
    assert words in response.text.lower()


def test_normal_below_the_stated_probability_beside_a_finding_is_not_stated(
        server: str) -> None:
    body = _draft(server, {"findings": [{"code": "Cardiomegaly/mild"},
                                        {"code": "normal", "probability": 0.2}]}).json()
    assert body["not_stated"] == ["normal"] and body["given_findings"] == ["cardiomegaly"]


def test_a_given_finding_the_text_denies_is_named(server: str) -> None:
    """A draft had said "There is no pneumothorax" and "Right-sided pneumothorax" for
    Pneumothorax/right: asserted, so neither added nor missing, and nothing said so."""
    checked = 0
    for code in ("Pneumothorax/right", "Pleural Effusion/left/small", "Cardiomegaly/mild",
                 "Opacity/lung/base/left", "Pulmonary Atelectasis/base/left"):
        body = _draft(server, {"findings": [{"code": code}], "indication": "cough"}).json()
        cls = body["given_findings"][0]
        from assistant.report.decoder.findings import mentions
        denies = any(cls in mentions(s)[1] for s in re.split(r"(?<=[.!?])\s+", body["text"]))
        assert (cls in body["denied"]) is denies, body["text"]
        checked += denies
        done = _draft(server, {"findings": [{"code": code}], "indication": "cough",
                               "complete": True}).json()
        assert done["denied"] == [], done["text"]  # completion drops the denials
    assert checked, "no draft denied its finding: the check above was not exercised"


def test_a_body_that_is_not_json_is_415(server: str) -> None:
    """A text or form body had been told "body: Input should be a valid dictionary"."""
    body = b'{"findings": [{"code": "Cardiomegaly"}]}'
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        response = httpx.post(f"{server}/v1/reports/draft", headers={"Content-Type": kind},
                              timeout=60, content=body)
        assert response.status_code == 415, (kind, response.text)
        assert "application/json" in response.json()["error"]["message"]
    # no Content-Type at all (requests.post(url, data=json.dumps(...))): FastAPI reads no
    # JSON from it either (the same 422 before)
    bare = httpx.Request("POST", f"{server}/v1/reports/draft", content=body)
    bare.headers.pop("Content-Type", None)
    assert "content-type" not in bare.headers
    with httpx.Client(timeout=60) as client:
        sent = client.send(bare)
        assert sent.status_code == 415 and "not none" in sent.json()["error"]["message"]


def test_a_finding_the_matcher_cannot_read_is_named_unchecked(server: str) -> None:
    """Bronchiectasis (a term the decoder knows, the matcher has no class for) had come
    back as given "normal", missing nothing."""
    alone = _draft(server, {"findings": [{"code": "Bronchiectasis"}]})
    assert alone.status_code == 200, alone.text
    body = alone.json()
    assert body["unchecked"] == ["Bronchiectasis"]
    assert body["given_findings"] == [] and body["missing"] == []
    both = _draft(server, {"findings": [{"code": "Bronchiectasis"},
                                        {"code": "Cardiomegaly/mild"}]}).json()
    assert both["unchecked"] == ["Bronchiectasis"] and both["given_findings"] == ["cardiomegaly"]
    assert _draft(server, {"findings": [{"code": "normal"}]}).json()["unchecked"] == []


def test_findings_below_the_stated_probability_are_left_out(server: str) -> None:
    """The decoder was trained on indexers' codes, which carry no probability: an unlikely
    finding is not stated to it (and the answer says which), never drafted as present."""
    both = _draft(server, {"findings": [{"code": "Cardiomegaly/mild", "probability": 0.9},
                                        {"code": "Pneumothorax/right", "probability": 0.2}]})
    assert both.status_code == 200, both.text
    alone = _draft(server, {"findings": [{"code": "Cardiomegaly/mild", "probability": 0.9}]})
    body = both.json()
    assert body["not_stated"] == ["Pneumothorax/right"] and alone.json()["not_stated"] == []
    assert body["given_findings"] == ["cardiomegaly"] and body["text"] == alone.json()["text"]


def test_the_vocabulary_lists_what_codes_may_name(server: str) -> None:
    response = httpx.get(f"{server}/v1/reports/vocabulary", timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"normal", "cardiomegaly", "pleural effusion", "pulmonary atelectasis"} <= set(
        body["terms"])
    assert {"left", "right", "mild", "base"} <= set(body["modifiers"])
    assert "atelectasis" not in body["terms"] and len(body["model"]["sha256"]) == 64


def _report_batches(server: str) -> tuple[float, float, float]:
    """From /metrics: report batches run, drafts in them, and batches of one draft."""
    text = httpx.get(f"{server}/metrics", timeout=10).text

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))

    return (value("assistant_report_batch_size_count"), value("assistant_report_batch_size_sum"),
            value('assistant_report_batch_size_bucket{le="1.0"}'))


def test_overlapping_drafts_share_batches_and_each_gets_its_own_report(server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"findings": [{"code": code}], "indication": ind} for code, ind in [
        ("normal", "chest pain"), ("Cardiomegaly/mild", None), ("Pleural Effusion/left", "dyspnea"),
        ("Opacity/lung/base/right", "cough"), ("Cardiomegaly/severe", None),
        ("Granulomatous Disease", "screening"), ("normal", None),
        ("Pulmonary Atelectasis/left", "fever")]]
    alone = [_draft(server, b).json()["text"] for b in bodies]  # one at a time
    before = _report_batches(server)
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: _draft(server, b), bodies * 3))
    assert [r.status_code for r in together] == [200] * len(together)
    # A study's report does not depend on the studies that shared its batch.
    assert [r.json()["text"] for r in together] == alone * 3
    batches, drafts, singles = (a - b for a, b in zip(_report_batches(server), before,
                                                      strict=True))
    assert drafts == len(together)
    assert batches < len(together) and batches - singles >= 1  # some batch held several


def test_report_drafts_batch_by_their_own_size_not_the_analyses() -> None:
    """The draft micro-batcher takes ``report_batch_max_size`` (decoder beams gain from
    wide batches), whatever the analyses' batch size is."""
    import asyncio
    from typing import cast

    from fastapi import FastAPI
    from starlette.requests import Request

    from assistant.config import ServiceConfig, Settings
    from assistant.report.decoder.bundle import Drafter
    from assistant.service.metrics import Metrics
    from assistant.service.reports import _batcher, close_reports

    settings = Settings(service=ServiceConfig(batch_max_size=1, report_batch_max_size=16))
    app = FastAPI()
    app.state.metrics = Metrics()

    async def build() -> int:
        request = Request({"type": "http", "app": app})
        try:  # nothing is drafted, so no decoder is loaded
            return _batcher(request, settings, cast(Drafter, None)).max_batch
        finally:
            await close_reports(app)

    assert asyncio.run(build()) == 16
