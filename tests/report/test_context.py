"""Clinical context is checked at the boundary: bad values raise ValueError saying why."""

import pytest

from assistant.report import Context


def test_good_context_is_normalised() -> None:
    ctx = Context.make("  headache,\n  vomiting ", "54", " Female ")
    assert ctx == Context(indication="headache, vomiting", age=54, sex="female")
    assert Context.make().empty and not ctx.empty
    assert ctx.to_dict() == {"indication": "headache, vomiting", "age": 54, "sex": "female"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("age", -1, "between 0 and 130"),
    ("age", 131, "between 0 and 130"),
    ("age", "forty", "whole number"),
    ("age", 40.5, "whole number"),
    ("age", True, "whole number"),
    ("sex", "X", "one of female, male, other, unknown"),
    ("sex", "fem", "one of female, male, other, unknown"),
    ("age", "45.5", "whole number"),
    ("age", "45 years", "whole number"),
    ("age", "-3", "whole number"),
    ("age", "045X", "whole number"),
    ("sex", 1, "one of female, male, other, unknown"),
    ("indication", "x" * 501, "at most 500 characters"),
    ("indication", "rule out\x00mass", "control"),
    ("indication", 12, "must be text"),
])
def test_bad_context_says_what_was_wrong(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Context.make(**{field: value})
    with pytest.raises(ValueError, match=message):  # built directly, checked all the same
        Context(**{field: value})  # type: ignore[arg-type]


def test_boundary_ages_are_accepted() -> None:
    assert Context.make(age=0).age == 0 and Context.make(age=130).age == 130


@pytest.mark.parametrize(("value", "age"), [
    ("45", 45), (" 45.0 ", 45), ("045Y", 45), ("45y", 45), ("006M", 0), ("030M", 2),
    ("010W", 0), ("400D", 1), ("0", 0), ("0045", 45), ("+45", 45)])
def test_ages_as_exports_write_them(value: str, age: int) -> None:
    """A spreadsheet's "45.0" and a DICOM Age String ("045Y"; months, weeks and days
    under a year are 0 years)."""
    assert Context.make(age=value).age == age


@pytest.mark.parametrize(("value", "sex"), [("F", "female"), ("m", "male"), ("O", "other"),
                                            ("Unknown", "unknown")])
def test_dicom_sex_codes(value: str, sex: str) -> None:
    assert Context.make(sex=value).sex == sex
