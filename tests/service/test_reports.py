"""POST /v1/reports/draft over HTTP against the real server and the release decoder."""

import httpx
import pytest


def _draft(server: str, body: object) -> httpx.Response:
    return httpx.post(f"{server}/v1/reports/draft", json=body, timeout=60)


def test_a_draft_follows_its_findings_and_says_it_is_a_draft(server: str) -> None:
    normal = _draft(server, {"findings": [{"code": "normal"}], "indication": "chest pain"})
    assert normal.status_code == 200, normal.text
    body = normal.json()
    assert body["draft"] is True and "clinician" in body["notice"]
    assert body["given_findings"] == ["normal"] and body["asserted_findings"] == ["normal"]
    assert body["added"] == [] and body["missing"] == []
    assert body["model"]["name"] == "report-iu-xray" and len(body["model"]["sha256"]) == 64
    effusion = _draft(server, {"findings": [{"code": "Pleural Effusion/left", "probability": 0.9},
                                            {"code": "Cardiomegaly/mild"}]}).json()
    given, got = set(effusion["given_findings"]), set(effusion["asserted_findings"])
    assert given == {"pleural effusion", "cardiomegaly"} and effusion["text"] != body["text"]
    # Whatever the draft leaves out or adds is named, so the clinician sees it.
    assert set(effusion["missing"]) == given - got
    assert set(effusion["added"]) == got - given - {"normal"}
    assert "cardiomegaly" in got


@pytest.mark.parametrize(("body", "words"), [
    ({"findings": []}, "findings"),
    ({"findings": [{"code": "   "}]}, "empty finding code"),
    ({"findings": [{"code": "normal", "probability": 2}]}, "probability"),
    ({"findings": [{"code": "Cardiomegaly"}] * 17}, "findings"),
    ({"findings": [{"code": "normal"}], "indication": "x" * 501}, "indication"),
    ("not an object", "valid dictionary"),
])
def test_bad_findings_are_422(server: str, body: object, words: str) -> None:
    response = _draft(server, body)
    assert response.status_code == 422, response.text
    assert words in response.text.lower()
