"""The web layer's private parts, shared by `jumpqueue.asgi`, `jumpqueue.wsgi` and the glue.

`finish`: `finish_request()` and the exchange it talks to; `serving`: counters,
the 503 answer and carried headers; `lifespan`: the runtime at server start and
stop; `responses`: framework responses turned into what a server sends;
`sent`: when a large body has reached the client. The public face of these
parts is `jumpqueue.integration`.
"""
