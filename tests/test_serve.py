"""``fastsr serve`` (issue 22): every route and error status, replies equal to the CLI's files byte for byte,
the token rule, a full queue, and the same app on Ray Serve. A tiny random-weight EDSR keeps it fast."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastsr
from fastsr import cli
from fastsr.imageio import read_image
from fastsr.serve import check_bind, create_app

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # Starlette's notice about httpx in its test client
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def tiny_net():
    torch.manual_seed(0)
    return fastsr.models.build(fastsr.models.EDSRConfig(n_resblocks=1, n_feats=8, scale=2))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def checkpoint(work) -> str:
    path = work / "tiny.safetensors"
    fastsr.save(tiny_net(), path)
    return str(path)


@pytest.fixture(scope="module")
def client(checkpoint):
    app = create_app([checkpoint], token=TOKEN, max_pixels=10_000, max_body_bytes=100_000)
    with TestClient(app) as c:
        yield c


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def kinds() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    return {
        "rgb8": Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)),
        "gray16": Image.fromarray(rng.integers(0, 65536, (9, 11), dtype=np.uint16)),
        "rgba": Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)),
        "gray": Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)),
    }


@pytest.mark.parametrize("kind", ["rgb8", "gray16", "rgba", "gray", "jpeg"])
def test_reply_is_the_cli_file_byte_for_byte(client, checkpoint, work, kind):
    ext = ".jpg" if kind == "jpeg" else ".png"
    im = kinds()["rgb8" if kind == "jpeg" else kind]
    src = work / f"{kind}{ext}"
    im.save(src, "JPEG" if kind == "jpeg" else "PNG")
    out = work / f"{kind}_cli{ext}"
    assert cli.main(["upscale", str(src), "-s", "2", "--model", checkpoint, "-o", str(out), "--overwrite"]) == 0
    data = src.read_bytes()
    r = client.post("/v1/upscale?scale=2", content=data, headers={**AUTH, "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.content == out.read_bytes()
    assert r.headers["content-type"] == ("image/jpeg" if kind == "jpeg" else "image/png")
    assert r.headers["x-fastsr-model"] == "tiny" and r.headers["x-fastsr-scale"] == "2"
    assert "upscale;dur=" in r.headers["server-timing"]
    expected = fastsr.upscale(read_image(src), 2, model=checkpoint)
    got = Image.open(io.BytesIO(r.content))
    assert got.mode == expected.mode
    if kind != "jpeg":  # lossless: the decoded reply is upscale's image
        assert np.array_equal(np.asarray(got), np.asarray(expected))
    if kind == "rgba":  # the same through a multipart form, and as Server-Sent Events
        files = {"file": ("../../etc/evil name.png", data, "image/png")}
        assert client.post("/v1/upscale", files=files, headers=AUTH).content == r.content
        events = client.post("/v1/upscale/stream?scale=2", content=data, headers={**AUTH, "Content-Type": "image/png"})
        parsed = [(b.split("\n")[0][7:], json.loads(b.split("\n")[1][6:])) for b in events.text.strip().split("\n\n")]
        names = [name for name, _ in parsed]
        assert names[0] == "queued" and names[-1] == "result" and "progress" in names
        import base64
        assert base64.b64decode(parsed[-1][1]["data"]) == r.content


def test_errors_are_json_with_their_status(client):
    png = png_bytes(kinds()["rgb8"])

    def post(query="", body=png, ctype="image/png", headers=AUTH):
        h = dict(headers)
        if ctype is not None:
            h["Content-Type"] = ctype
        r = client.post("/v1/upscale" + query, content=body, headers=h)
        assert r.headers["content-type"] == "application/json"
        return r.status_code, r.json()["error"]

    not_an_image = "cannot read image upload: UnidentifiedImageError: cannot identify image file 'upload'"
    assert post(body=b"not an image") == (400, not_an_image)
    assert post("?scale=3") == (400, "the model has no x3; it upscales by x2")
    assert post("?model=nope") == (400, "unknown model 'nope'; this server has: tiny")
    assert post("?scale=abc")[0] == 400
    status, message = post(ctype="text/plain")
    assert status == 415 and "unsupported content type 'text/plain'" in message
    assert post(ctype=None)[0] == 415
    assert post(body=b"\0" * 100_001) == (413, "the upload is over the limit of 100,000 bytes (--max-body-bytes)")
    r = client.post("/v1/upscale", content=iter([b"\0" * 60_000] * 2), headers={**AUTH, "Content-Type": "image/png"})
    assert r.status_code == 413  # streamed without Content-Length: counted as it arrives
    status, message = post(body=png_bytes(Image.new("RGB", (200, 60))))
    assert status == 413 and "12,000 pixels, over the limit of 10,000" in message
    bomb = bytearray(png_bytes(Image.new("L", (8, 8))))  # the header claims 50000 x 50000: refused before decoding
    bomb[16:24] = struct.pack(">II", 50000, 50000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    status, message = post(body=bytes(bomb))
    assert status == 413 and "pixel" in message
    r = client.post("/v1/upscale", files={"other": ("a.png", png, "image/png")}, headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (400, "the multipart form has no field 'file' (the image file)")
    assert post(headers={}) == (401, "missing token: send the header 'Authorization: Bearer <token>'")
    assert post(headers={"Authorization": "Bearer wrong"}) == (401, "wrong token")
    assert client.get("/v1/models").status_code == 401
    assert client.get("/no/such/route").json() == {"error": "Not Found"}


def test_models_health_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok", "busy": False, "queued": 0}  # no token needed
    models = client.get("/v1/models", headers=AUTH).json()
    assert models["default"] == "tiny"
    assert models["models"][0] | {"device": "cpu"} == {
        "name": "tiny", "arch": "edsr", "scales": [2], "default_scale": 2, "default": True, "device": "cpu",
        "precision": models["models"][0]["precision"]}
    spec = client.get("/openapi.json").json()
    assert {"/v1/upscale", "/v1/upscale/stream", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN: not served
    page = client.get("/")
    assert page.status_code == 200 and 'src="page/app.js"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers  # no CORS unless asked
    for name in ("app.js", "style.css"):
        asset = client.get(f"/page/{name}")
        assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    assert client.get("/page/../serve.py").status_code == 404


class Gated(fastsr.Upscaler):
    """An upscaler that waits for a gate: the worker is busy for as long as a test wants."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate, self.started = threading.Event(), threading.Event()
        self.shapes = []  # the input's shape in each call: HxWxC for one image, NxHxWxC for a batch

    def __call__(self, *args, **kwargs):
        self.shapes.append(np.asarray(args[0]).shape)
        self.started.set()
        assert self.gate.wait(30)
        return super().__call__(*args, **kwargs)

    def upscale_batch(self, *args, **kwargs):
        self.shapes.append(np.asarray(args[0]).shape)
        self.started.set()
        assert self.gate.wait(30)
        return super().upscale_batch(*args, **kwargs)


class Broken(fastsr.Upscaler):
    def __call__(self, *args, **kwargs):
        raise RuntimeError("a bug")


def test_full_queue_503_health_while_busy_and_500_keeps_the_server_up():
    net = tiny_net()
    gated = Gated(net)
    app = create_app({"gated": gated, "broken": Broken(net)}, queue_size=1, cors_origins=["http://example.test"])
    png = png_bytes(kinds()["rgb8"])
    headers = {"Content-Type": "image/png"}
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/upscale?model=broken", content=png, headers=headers)
        assert (r.status_code, r.json()) == (500, {"error": "internal error (RuntimeError); the server's log has "
                                                            "the details"})
        replies = []

        def send():
            replies.append(client.post("/v1/upscale", content=png, headers=headers))

        first = threading.Thread(target=send)
        first.start()
        assert gated.started.wait(30)
        health = client.get("/healthz").json()  # the event loop answers while the model works
        assert health["busy"] is True
        second = threading.Thread(target=send)
        second.start()
        deadline = time.monotonic() + 30
        while client.get("/healthz").json()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = client.post("/v1/upscale", content=png, headers=headers)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert r.json() == {"error": f"the server is busy (queue full); retry in {r.headers['retry-after']} s"}
        assert client.post("/v1/upscale/stream", content=png, headers=headers).status_code == 503
        gated.gate.set()
        first.join(30)
        second.join(30)
        assert [x.status_code for x in replies] == [200, 200] and replies[0].content == replies[1].content
        assert client.get("/v1/models", headers={"Origin": "http://example.test"}).headers[
            "access-control-allow-origin"] == "http://example.test"


def test_queued_images_of_one_size_go_through_one_call():
    gated = Gated(tiny_net())
    rng = np.random.default_rng(7)
    sizes = [(10, 12)] * 4 + [(7, 9)]  # the first blocks the worker; then 3 of its size and 1 other queue
    pngs = [png_bytes(Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))) for hw in sizes]
    headers = {"Content-Type": "image/png"}
    with TestClient(create_app({"gated": gated}, max_pixels=None)) as client:
        replies = {}

        def send(i):
            replies[i] = client.post("/v1/upscale", content=pngs[i], headers=headers)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(pngs))]
        threads[0].start()
        assert gated.started.wait(30)
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 30
        while client.get("/healthz").json()["queued"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        gated.gate.set()
        for t in threads:
            t.join(30)
    assert gated.shapes[0] == (10, 12, 3)
    assert sorted(gated.shapes[1:], key=len) == [(7, 9, 3), (3, 10, 12, 3)]  # one batch of 3, sizes never mixed
    with TestClient(create_app({"one": fastsr.Upscaler(tiny_net())}, max_pixels=None, max_batch=1)) as client:
        for i, png in enumerate(pngs):  # each reply is the unbatched one, byte for byte
            assert replies[i].status_code == 200
            assert replies[i].content == client.post("/v1/upscale", content=png, headers=headers).content


def test_a_non_local_bind_needs_a_token(capsys, monkeypatch):
    monkeypatch.delenv("FASTSR_TOKEN", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 (not a loopback address) without a token" in capsys.readouterr().err
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert check_bind(host, None) is None
    assert check_bind("0.0.0.0", "t") is None and check_bind("192.0.2.1", "t") is None
    assert "with no token" in check_bind("0.0.0.0", None, insecure_no_token=True)
    with pytest.raises(ValueError):
        check_bind("example.com", None)
    assert cli.main(["serve", "--replicas", "2"]) == 2  # Ray's options go with --ray
    capsys.readouterr()
    assert cli.main(["serve", "--queue", "0"]) == 2  # refused before any model is loaded
    assert "queue_size must be an integer >= 1, got 0" in capsys.readouterr().err


def test_import_fastsr_imports_no_web_framework():
    code = ("import sys, fastsr, fastsr.cli; fastsr.cli.build_parser(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', 'ray')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_upscaler_progress_hook_keeps_the_result():
    up = fastsr.Upscaler(tiny_net(), precision="fp32")
    img = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    calls = []
    out = up(img, 2, tile=4, on_tile=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 9) for i in range(1, 10)]
    assert np.array_equal(out, up(img, 2, tile=4))


def test_ray_serve_runs_the_same_app():
    ray = pytest.importorskip("ray")
    try:
        from ray import serve
    except ImportError as e:
        pytest.skip(f"ray.serve is not importable: {e}")
    import httpx

    from fastsr.serve import ray_application

    if ray.is_initialized():
        pytest.skip("a Ray instance from another test is running")
    port = _free_port()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_application(tiny_net(), replicas=1, precision="fp32", token=TOKEN), name="fastsr",
                  route_prefix="/")
        png = png_bytes(kinds()["rgba"])
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/healthz").json()["status"] == "ok"
        r = httpx.post(base + "/v1/upscale", content=png, headers={**AUTH, "Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 200, r.text
        expected = fastsr.upscale(Image.open(io.BytesIO(png)), 2, model=tiny_net(), precision="fp32")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), np.asarray(expected))
        assert httpx.post(base + "/v1/upscale", content=png, headers={"Content-Type": "image/png"}).status_code == 401
    finally:
        serve.shutdown()
        ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
