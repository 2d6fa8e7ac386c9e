from __future__ import annotations

import io

import pytest
from jumpqueue.testing import immediate
from litestar.testing import TestClient
from PIL import Image

from thumbs_app import app, make_thumbnail


@pytest.fixture
def png_bytes() -> bytes:
    image = io.BytesIO()
    Image.linear_gradient("L").resize((1200, 600)).save(image, format="PNG")
    return image.getvalue()


def test_upload_makes_a_thumbnail(png_bytes: bytes) -> None:
    # immediate() runs each call in the test's thread, a process task too.
    with TestClient(app) as client, immediate() as calls:
        assert client.post("/images/sunset", content=png_bytes).status_code == 202
        assert calls[0].fn is make_thumbnail.fn
        thumbnail = client.get("/thumbnails/sunset")
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).size == (256, 128)
