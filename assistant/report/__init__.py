"""The report decoder and drafting."""
