"""EmulatorServer: the emulator on a real socket (plain and TLS), started and stopped cleanly."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
import trustme

from pdauth.emulator import EmulatorConfig, EmulatorServer


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile, cafile = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return certfile, keyfile, cafile


def test_server_binds_a_free_port_serves_and_stops():
    with EmulatorServer(EmulatorConfig(seed=2)) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.eu_api_url == server.url + "/eu"
        with httpx.Client(base_url=server.url) as client:
            doc = client.get("/global/oauth/anonymous/.well-known/openid-configuration").json()
            assert doc["token_endpoint"] == server.url + "/oauth/token"
            approved = client.post(
                "/_emulator/authorize",
                json={
                    "client_id": "pdauth-demo",
                    "redirect_uri": "http://127.0.0.1:8000/callback",
                    "response_type": "code",
                    "scope": "read",
                    "user": "admin@acme.example",
                },
            )
            assert approved.status_code == 200
        assert server.state.stats.snapshot()["authorize_decisions"] == {"approved": 1}
        port = server.port
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    # The port is released: nothing listens there any more.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_two_servers_run_side_by_side_with_separate_state():
    with EmulatorServer() as a, EmulatorServer() as b:
        assert a.port != b.port
        a.state.clock.advance(100)
        assert b.state.clock.offset == 0
        with httpx.Client() as client:
            assert client.get(a.url + "/_emulator/clock").json()["offset"] == 100
            assert client.get(b.url + "/_emulator/clock").json()["offset"] == 0


def test_server_refuses_a_second_start_and_stop_is_idempotent():
    server = EmulatorServer().start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()


def test_server_serves_tls_with_a_trusted_certificate(tls_files):
    certfile, keyfile, cafile = tls_files
    with EmulatorServer(certfile=certfile, keyfile=keyfile) as server:
        assert server.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cafile))
        with httpx.Client(verify=context) as client:
            jwks = client.get(server.url + "/global/oauth/anonymous/jwks")
            assert jwks.status_code == 200
            assert jwks.json()["keys"]
            doc = client.get(
                server.url + "/global/oauth/anonymous/.well-known/openid-configuration"
            ).json()
            assert doc["jwks_uri"].startswith("https://127.0.0.1:")
        # A client that does not trust the throwaway CA refuses the connection.
        with httpx.Client() as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(server.url + "/_emulator/health")


def test_a_bad_certificate_raises_in_the_callers_thread(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    server = EmulatorServer(certfile=bogus, keyfile=bogus)
    with pytest.raises(ssl.SSLError):
        server.start()
    with pytest.raises(ValueError, match="certfile"):
        EmulatorServer(keyfile=bogus)


def test_a_parked_timeout_fault_does_not_hang_stop():
    with EmulatorServer() as server:
        server.state.faults.add("token", "timeout", delay=30)
        with httpx.Client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
            client.post(server.url + "/oauth/token", data={"grant_type": "refresh_token"})
