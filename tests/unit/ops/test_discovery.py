"""Workers announce their metrics endpoint to Prometheus through file_sd files
(streams.runtime.discovery): the file's content, its atomic replacement, its removal, and the
``discovery_dir`` setting. A real Prometheus reading these files:
tests/integration/test_prometheus.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from streams.config import ConfigError, Settings, load_settings
from streams.metrics import Metrics
from streams.runtime import discovery
from streams.serving.server import Health, QueryServer
from topologies.trip_stats import topology as trip_stats


def test_register_writes_one_file_sd_entry_and_remove_deletes_it(tmp_path: Path) -> None:
    d = tmp_path / "sd" / "nested"  # created on demand
    reg = discovery.register(d, "trip_stats", "127.0.0.1", 9421, "exactly_once")
    assert reg.path.parent == d and reg.path.suffix == ".json"
    assert reg.path.name.startswith("trip_stats-")
    doc = json.loads(reg.path.read_text())
    assert doc == [{"targets": ["127.0.0.1:9421"],
                    "labels": {"topology": "trip_stats", "guarantee": "exactly_once",
                               "worker_id": f"{socket.gethostname()}-{os.getpid()}"}}]
    assert os.listdir(d) == [reg.path.name]  # no temporary left behind
    reg.remove()
    assert os.listdir(d) == []
    reg.remove()  # twice: nothing to do


def test_register_again_replaces_the_file_whole(tmp_path: Path) -> None:
    first = discovery.register(tmp_path, "payments", "127.0.0.1", 9410, "exactly_once")
    second = discovery.register(tmp_path, "payments", "127.0.0.1", 9499, "exactly_once")
    assert first.path == second.path
    assert json.loads(second.path.read_text())[0]["targets"] == ["127.0.0.1:9499"]
    assert os.listdir(tmp_path) == [first.path.name]


@pytest.mark.parametrize("host,want", [("127.0.0.1", "127.0.0.1:9400"),
                                       ("::1", "[::1]:9400"),
                                       ("0.0.0.0", f"{socket.gethostname()}:9400")])
def test_target_address(host: str, want: str) -> None:
    assert discovery.target_address(host, 9400) == want


def test_the_registered_port_is_the_one_the_server_bound(tmp_path: Path) -> None:
    """The configured port is taken: the worker's HTTP server falls back to a free one, and the
    discovery file names that one, which answers /metrics."""
    async def run() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            server = QueryServer(trip_stats, Metrics("trip_stats"), None,  # type: ignore[arg-type]
                                 None, lambda: Health("running"))  # type: ignore[arg-type]
            port = await server.start("127.0.0.1", busy)
            try:
                assert port != busy
                reg = discovery.announce(Settings(discovery_dir=str(tmp_path)), "trip_stats",
                                         "127.0.0.1", port)
                assert reg is not None
                [target] = json.loads(reg.path.read_text())[0]["targets"]
                body = await asyncio.to_thread(lambda: urllib.request.urlopen(
                    f"http://{target}/metrics", timeout=10).read())
                assert b"streams_commits_total" in body
            finally:
                await server.stop()

    asyncio.run(run())


def test_discovery_off_writes_nothing(tmp_path: Path) -> None:
    assert discovery.announce(Settings(discovery_dir=""), "x", "127.0.0.1", 1) is None


def test_an_unwritable_discovery_dir_is_one_warning(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")  # (a directory below a file: the same error for root, too)
    settings = Settings(discovery_dir=str(a_file / "sd"))
    assert discovery.announce(settings, "x", "127.0.0.1", 1) is None
    [record] = caplog.records
    assert record.levelname == "WARNING" and "cannot write to discovery_dir" in record.message


def test_discovery_dir_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_CONFIG_DIR", raising=False)
    monkeypatch.delenv("STREAMS_DISCOVERY_DIR", raising=False)
    assert load_settings().discovery_dir == ".streams/discovery"
    monkeypatch.setenv("STREAMS_DISCOVERY_DIR", str(tmp_path / "sd"))
    assert load_settings().discovery_dir == str(tmp_path / "sd")
    a_file = tmp_path / "file"
    a_file.write_text("")
    monkeypatch.setenv("STREAMS_DISCOVERY_DIR", str(a_file))
    with pytest.raises(ConfigError, match="STREAMS_DISCOVERY_DIR: discovery_dir must be a "
                                          "directory"):
        load_settings()
    monkeypatch.delenv("STREAMS_DISCOVERY_DIR")
    config = tmp_path / "bad.toml"
    config.write_text("discovery_dir = 5\n")
    with pytest.raises(ConfigError, match="bad.toml: discovery_dir must be a string"):
        load_settings(config_file=config)
