"""The HTTP service: FastAPI app, routes, schemas and the one error mapping."""
