"""Medical imaging assistant: diagnosis, drafted report and cited literature for an image.

Everything it produces is a draft for a clinician to verify.
"""

__version__ = "0.1.0"

DRAFT_NOTICE = (
    "Draft produced by software for a qualified clinician to verify; "
    "it is not a diagnosis and must not be acted on without review."
)
