"""``rediss://``: gateway and workers reach Redis over TLS with a self-signed certificate, as on managed services.

The embedded redis-server is built without TLS, so a TLS-terminating proxy (Python's ssl, a certificate made
by openssl for 127.0.0.1) stands in front of it: the clients speak real TLS, the server plain RESP.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.config import Config
from shared.redis_options import redis_options
from shared.redis_server import RedisServer, free_port
from tests.support.processes import TEST_MODULES, Gateway, Process, live_workers, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("no openssl to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def tls_url(redis_server: RedisServer, certificate: tuple[Path, Path]) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    port = free_port()
    loop = asyncio.new_event_loop()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", port, ssl=context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"rediss://127.0.0.1:{port}/0"
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def ping(url: str, config: Config) -> bool:
    with redis.Redis.from_url(url, socket_connect_timeout=2, **redis_options(url, config)) as client:
        return bool(client.ping())


def test_a_self_signed_server_is_refused_by_default(tls_url: str):
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        ping(tls_url, Config())


def test_its_ca_or_no_verification_reaches_it(tls_url: str, certificate: tuple[Path, Path]):
    assert ping(tls_url, Config(redis_ca_cert=certificate[0]))
    assert ping(tls_url, Config(redis_tls_verify="none"))


def test_gateway_and_workers_run_over_tls(tls_url: str, redis_server: RedisServer, logs_dir: Path):
    env = {"REDIS_TLS_VERIFY": "none"}
    workers = Process(
        ["-m", "workers", "--processes", "1"],
        {"REDIS_URL": tls_url, "WORKER_MODULES": TEST_MODULES, **env},
        logs_dir / "tls-workers.log",
    )
    gateway = None
    try:
        wait_until(lambda: workers.check() or live_workers(redis_server.url), 30, "a worker over TLS")
        gateway = Gateway(tls_url, logs_dir / "tls-gateway.log", **env).wait_ready()
    finally:
        if gateway:
            assert gateway.stop() == 0, gateway.log()
        assert workers.stop() == 0, workers.log()
