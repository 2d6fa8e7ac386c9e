"""A Litestar image service: thumbnails are made after the response, in child processes."""

from __future__ import annotations

import os
from pathlib import Path

import jumpqueue
from jumpqueue.contrib.litestar import JumpQueuePlugin
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath
from PIL import Image

MEDIA = Path(os.environ.get("THUMBS_MEDIA", "media"))
SIZE = (256, 256)


@jumpqueue.task(executor="process", timeout=60, retries=1)
def make_thumbnail(source: str, target: str) -> None:
    """Scale the image down: CPU-bound, so it runs in a child process, not on the event loop."""
    with Image.open(source) as image:
        image.thumbnail(SIZE, Image.Resampling.LANCZOS)
        image.save(target + ".part", format="PNG")
    os.replace(target + ".part", target)  # readers never see half a file


def _paths(name: str) -> tuple[Path, Path]:
    if not name.isalnum():
        raise HTTPException(status_code=400, detail="a name of letters and digits, please")
    return MEDIA / f"{name}.original", MEDIA / f"{name}.png"


@post("/images/{name:str}", status_code=202)
async def upload(name: FromPath[str], request: Request[object, object, State]) -> str:
    """Store the upload; its thumbnail is made once the response is sent."""
    original, thumbnail = _paths(name)
    original.write_bytes(await request.body())
    jumpqueue.defer(make_thumbnail, str(original), str(thumbnail))
    return "accepted"


@get("/thumbnails/{name:str}")
async def thumbnail(name: FromPath[str]) -> Response[bytes]:
    """The thumbnail, once it is made."""
    path = _paths(name)[1]
    if not path.exists():
        raise NotFoundException("not made yet")
    return Response(path.read_bytes(), media_type="image/png")


MEDIA.mkdir(parents=True, exist_ok=True)
app = Litestar([upload, thumbnail], plugins=[JumpQueuePlugin()])
