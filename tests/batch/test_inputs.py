"""Discovering studies: folders (recursive, what is left out, links), CSV manifests
(relative paths, context, bad rows), and the content keys studies are stored by."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.batch.errors import BatchInputError
from assistant.batch.inputs import discover, read_manifest, study_id, study_key
from assistant.report import Context

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 40
DICOM = b"\x00" * 128 + b"DICM" + b"\x00" * 40


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_recursive_in_path_order_leaving_out_what_is_no_image(tmp_path: Path) -> None:
    _write(tmp_path / "b.png", PNG)
    _write(tmp_path / "a" / "z.JPG", JPEG)
    _write(tmp_path / "a" / "IM0001", DICOM)  # no extension: recognised by its bytes
    _write(tmp_path / "broken.jpg", b"not really")  # an image by name: drafted (and fails)
    _write(tmp_path / "notes.txt", b"hello")
    _write(tmp_path / ".hidden.png", PNG)
    _write(tmp_path / "__MACOSX" / "._b.png", PNG)
    _write(tmp_path / ".git" / "x.png", PNG)
    items, ignored = discover(tmp_path)
    assert [i.source for i in items] == ["a/IM0001", "a/z.JPG", "b.png", "broken.jpg"]
    assert [i.seq for i in items] == [0, 1, 2, 3]
    assert ignored == 1
    assert all(i.error is None and i.path is not None and i.path.is_file() for i in items)


def test_links_outside_the_allowed_roots_fail(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _write(root / "in.png", PNG)
    secret = _write(outside / "secret.png", PNG)
    (root / "link.png").symlink_to(secret)
    (root / "notes.txt").symlink_to(_write(outside / "notes.txt", b"x"))  # no image: left out
    (root / "dirlink").symlink_to(outside, target_is_directory=True)  # not followed
    items, ignored = discover(root, allowed_roots=[root.resolve()])
    assert ignored == 1
    by_source = {i.source: i for i in items}
    assert set(by_source) == {"in.png", "link.png"}
    assert by_source["in.png"].error is None
    assert by_source["link.png"].path is None
    assert "outside the allowed folders" in str(by_source["link.png"].error)


def test_manifest_paths_and_context(tmp_path: Path) -> None:
    _write(tmp_path / "imgs" / "a.png", PNG)
    elsewhere = _write(tmp_path.parent / f"{tmp_path.name}-abs.png", PNG)
    manifest = tmp_path / "lists" / "studies.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "\ufeffPath,Indication,age,sex,ward\n"  # a BOM, header case and an extra column
        "../imgs/a.png,headache,61,Male,3\n"
        f"{elsewhere},,,,\n"
        "../imgs/a.png,seizure,abc,,\n"
        ",headache,40,female,\n"
        "../imgs/missing.png,,,,\n", encoding="utf-8")
    items = read_manifest(manifest)
    assert [i.source for i in items] == ["../imgs/a.png", str(elsewhere), "../imgs/a.png", "",
                                         "../imgs/missing.png"]
    first, second, bad_age, no_path, missing = items
    assert first.path is not None and first.path.resolve() == (tmp_path / "imgs/a.png")
    assert first.context == Context("headache", 61, "male")
    assert second.path == elsewhere and second.context is not None and second.context.empty
    assert bad_age.path is None and "invalid context" in str(bad_age.error)
    assert "age" in str(bad_age.error)
    assert no_path.error == "the row names no file"
    assert missing.error is None and missing.path is not None  # fails when it is read


def test_manifest_with_semicolons(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", PNG)
    (tmp_path / "m.csv").write_text("path;age\na.png;7\n")
    (item,) = read_manifest(tmp_path / "m.csv")
    assert item.path == tmp_path / "a.png" and item.context == Context(age=7)


@pytest.mark.parametrize("content", ["file,age\na.png,3\n", "", "\n"])
def test_manifest_without_a_path_column_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(BatchInputError, match="no 'path' column"):
        discover(tmp_path / "m.csv")


@pytest.mark.parametrize("header", ["path,path", "path,age,Path ", "path,age,age"])
def test_a_column_named_twice_is_refused(tmp_path: Path, header: str) -> None:
    """csv.DictReader keeps the last of two columns of one name: "path,path" had drafted the
    second column's studies and dropped the first's without a word."""
    (tmp_path / "m.csv").write_text(f"{header}\na.png,b.png,3\n")
    with pytest.raises(BatchInputError, match="names a column more than once"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_outside_allowed_roots(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path\n/etc/hostname\n")
    (item,) = read_manifest(tmp_path / "m.csv", allowed_roots=[tmp_path])
    assert item.path is None and "outside the allowed folders" in str(item.error)


def test_inputs_that_are_no_batch(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="does not exist"):
        discover(tmp_path / "nothing")
    with pytest.raises(BatchInputError, match="neither a folder nor a CSV"):
        discover(_write(tmp_path / "one.png", PNG))
    with pytest.raises(BatchInputError, match="cannot read the manifest"):
        discover(_write(tmp_path / "latin1.csv", "path\ncaf\xe9.png\n".encode("latin-1")))


def test_study_keys_follow_content_and_context() -> None:
    sha = "ab" * 32
    assert study_key(sha, None) == sha == study_key(sha, Context())
    with_context = study_key(sha, Context("headache", 61, "male"))
    assert with_context.startswith(sha + ":") and with_context != study_key(
        sha, Context("headache", 62, "male"))
    assert with_context == study_key(sha, Context.make(" headache ", "61", "MALE"))
    assert study_id(sha) == study_id(sha) != study_id(with_context)
    assert len(study_id(sha)) == 32


def test_a_quote_never_closed_stops_the_manifest_naming_its_line(tmp_path: Path) -> None:
    """Read loosely, the open quote swallows every row after it into one indication."""
    manifest = tmp_path / "q.csv"
    manifest.write_text('path,indication,age\na.png,2" mass,40\nb.png,x,41\n'
                        'c.png,"open quote,42\nd.png,row1,50\ne.png,row2,50\n')
    with pytest.raises(BatchInputError, match="from line 4"):
        read_manifest(manifest)
    manifest.write_text('path,indication\na.png,"5" lesion\n')  # text after a closing quote
    with pytest.raises(BatchInputError, match="from line 2"):
        read_manifest(manifest)
    manifest.write_text("path,indication\na.png," + "x" * 200_000 + "\n")
    with pytest.raises(BatchInputError, match="line 2"):
        read_manifest(manifest)


def test_spaces_after_delimiters_and_rows_longer_than_the_header(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text('path, indication, age\nscans/a.png, "headache, vomiting", 40\n'
                        "scans/b.png, chest pain, 50, 7\n")
    first, longer = read_manifest(manifest)
    assert first.context == Context("headache, vomiting", 40, None)
    assert longer.path is None and "1 more cell(s) than the header" in str(longer.error)


def test_quoted_line_breaks_and_blank_rows(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text('path;indication;age;sex\n"a.png";"line one\nline two";045Y;F\n'
                        ";;;\n\n;;;\n")
    (item,) = read_manifest(manifest)  # the rows of empty cells are blank, not failures
    assert item.context == Context("line one line two", 45, "female")


def test_file_names_that_are_not_utf8_are_named_with_escapes(tmp_path: Path) -> None:
    raw = bytes(tmp_path) + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write(PNG)
    (item,), _ = discover(tmp_path)
    assert item.source == "caf\\xe9.png" and item.source.encode("utf-8")
    assert item.path is not None and item.path.read_bytes() == PNG  # still opens the file


def test_a_file_is_checked_where_it_really_is_when_read(tmp_path: Path) -> None:
    """A link swapped in after the job was made reaches no further than the allowed
    folders: the open file's own location is checked, not the name's earlier one."""
    from assistant.batch.engine import load
    from assistant.config import Limits

    root, outside = tmp_path / "root", tmp_path / "outside"
    _write(root / "a.png", PNG)
    secret = _write(outside / "secret.png", PNG + b"secret")
    (item,), _ = discover(root, allowed_roots=[root.resolve()])
    assert item.error is None
    loaded = load(item, Limits(), [root])
    assert not isinstance(loaded, str) and loaded.data == PNG
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(secret)  # swapped after discovery
    assert load(item, Limits(), [root]) == ("the file is a link to somewhere outside the "
                                            "allowed folders")
    assert not isinstance(load(item, Limits()), str)  # the command line's own files: read


def test_a_pipe_named_like_an_image_fails_without_waiting(tmp_path: Path) -> None:
    import os

    from assistant.batch.engine import load
    from assistant.batch.inputs import Item
    from assistant.config import Limits

    fifo = tmp_path / "scan.jpg"
    os.mkfifo(fifo)
    assert load(Item(0, "scan.jpg", fifo), Limits()) == "not a regular file"
    assert load(Item(0, "x.jpg", tmp_path / "x.jpg"), Limits()) == "no such file"
    assert load(Item(0, "d.jpg", tmp_path), Limits()) == "not a regular file"
