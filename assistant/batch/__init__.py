"""Batch drafting: many studies in, reports out, resumably (``assistant draft``,
``/v1/batches``). No web imports: the service's routes are in ``assistant.service``.

- ``inputs``: a folder or CSV manifest -> the studies to draft, keyed by content;
- ``store``: SQLite of drafted studies (by key) and of HTTP jobs;
- ``engine``: drafting in model batches in this process; ``ray_engine``: on Ray;
- ``output``: JSON lines or a FHIR R4B Bundle, written from the store;
- ``archive``: safe unpacking of an uploaded zip; ``jobs``: HTTP jobs and their runner.

Nothing is imported here, so that ``assistant.batch.errors`` stays light (the service's
error mapping imports it); import from the modules.
"""
