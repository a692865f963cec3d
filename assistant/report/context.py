"""Clinical context that may come with an image: indication, age, sex, checked at the
boundary. A bad value raises ``ValueError`` saying what was expected and what came (the
service maps it to 422). The vision model does not use the context; reports quote it."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Sex = Literal["female", "male", "other", "unknown"]
SEXES: tuple[str, ...] = get_args(Sex)
MAX_AGE = 130
MAX_INDICATION = 500  # characters


def _indication(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"indication must be text, got {type(value).__name__}")
    text = " ".join(value.split())
    if len(text) > MAX_INDICATION:
        raise ValueError(f"indication must be at most {MAX_INDICATION} characters, "
                         f"got {len(text)}")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        raise ValueError("indication must not contain control or format characters")
    return text or None


# A whole number, as written or as a spreadsheet exports it ("45.0"), or a DICOM Age
# String ("045Y", and months, weeks or days: "006M" is 0 years).
_AGE = re.compile(r"\+?(?P<n>\d{1,4})(\.0+)?\s*(?P<unit>[YMWD]?)", re.IGNORECASE)
_PER_YEAR = {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}


def _age(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"age must be a whole number of years, got {value!r}")
    if isinstance(value, int):
        age = value
    elif match := _AGE.fullmatch(value.strip()):
        age = int(match["n"]) // _PER_YEAR[match["unit"].upper()]
    else:
        raise ValueError(f"age must be a whole number of years (or a DICOM age such as "
                         f"045Y), got {value!r}")
    if not 0 <= age <= MAX_AGE:
        raise ValueError(f"age must be between 0 and {MAX_AGE} years, got {age}")
    return age


# DICOM Patient's Sex (0010,0040) codes, as exports from a PACS hold them.
_SEX_CODES = {"f": "female", "m": "male", "o": "other"}


def _sex(value: object) -> Sex | None:
    if value is None:
        return None
    key = value.strip().lower() if isinstance(value, str) else value
    key = _SEX_CODES.get(key, key) if isinstance(key, str) else key
    if key not in SEXES:
        raise ValueError(f"sex must be one of {', '.join(SEXES)} (or the DICOM codes F, M, "
                         f"O), got {value!r}")
    return key  # type: ignore[return-value]


@dataclass(frozen=True)
class Context:
    """Optional clinical context, checked and normalised when made (``Context.make`` takes
    untyped values, as a form or a command line gives them)."""

    indication: str | None = None
    age: int | None = None  # years, 0-130
    sex: Sex | None = None

    @classmethod
    def make(cls, indication: object = None, age: object = None, sex: object = None,
             ) -> Context:
        """Checked context: raises ValueError for an age outside 0-130, a sex outside
        ``SEXES``, or an indication that is not short plain text."""
        return cls(_indication(indication), _age(age), _sex(sex))

    def __post_init__(self) -> None:
        # A directly built Context is checked and normalised too: nothing unchecked
        # reaches a report.
        object.__setattr__(self, "indication", _indication(self.indication))
        object.__setattr__(self, "age", _age(self.age))
        object.__setattr__(self, "sex", _sex(self.sex))

    @property
    def empty(self) -> bool:
        return self.indication is None and self.age is None and self.sex is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
