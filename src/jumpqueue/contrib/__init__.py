"""Thin glue between jumpqueue and web frameworks or servers, one module each.

Each module imports its framework, so import the one you use:
`jumpqueue.contrib.django`, `.flask`, `.starlette` (FastAPI too), `.litestar`,
`.gunicorn`.
"""
