"""Model names are checked at once, without loading: paths, hub ids, the hub without a network (issue 11)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from helpers.core import models, registry


@pytest.mark.parametrize("name", ["../nope", "./nope", "/no/such/folder/anywhere", "~/no-such-model-folder", "a/b/c"])
def test_a_path_that_does_not_exist_fails_at_once_as_no_such_folder(name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(models.UnknownModelError, match="no such folder"):
        models.check_model_name(name)
    with pytest.raises(models.UnknownModelError, match="no such folder"):
        models.load_model(name)
    assert time.perf_counter() - start < 1.0


def test_a_folder_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(models.ModelUnavailableError, match="no config.json"):
        models.check_model_name(str(tmp_path))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(models.UnknownModelError, match="a file, not a folder"):
        models.check_model_name(str(file))


@pytest.mark.parametrize("name", ["minilm-l6", "tiny-gpt2", "random-gpt2"])
def test_registered_offline_models_pass_the_check(name: str) -> None:
    models.check_model_name(name)  # no error, nothing loaded


@pytest.mark.parametrize("name", ["owner/model", "Qwen/Qwen1.5-0.5B", "a.b/c-d_e"])
def test_hub_ids_are_owner_slash_name(name: str) -> None:
    assert models.HUB_ID.match(name) and models.resolve(name).source == "hub"


@pytest.mark.parametrize("name", ["gpt3-turbo", "owner/", "/model", "owner//model", "own er/model"])
def test_other_names_are_unknown(name: str) -> None:
    with pytest.raises(models.UnknownModelError):
        models.resolve(name)


def test_uncached_hub_id_without_a_network_fails_within_two_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # whatever HF_HUB_OFFLINE says: here it is unset, and the hub endpoint refuses connections
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(registry, "_REACHABLE", {})
    start = time.perf_counter()
    with pytest.raises(models.ModelUnavailableError, match="cannot be reached") as raised:
        models.check_model_name("someone/not-cached-anywhere")
    with pytest.raises(models.ModelUnavailableError, match="hf download someone/not-cached-anywhere"):
        models.load_model("someone/not-cached-anywhere")
    assert time.perf_counter() - start < 2.0
    assert "someone/not-cached-anywhere" in str(raised.value)


def test_the_reachability_check_never_waits_longer_than_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def hanging_connect(*args: object, **kwargs: object) -> None:  # a DNS lookup or SYN that never answers
        time.sleep(2)
        raise TimeoutError("timed out")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "_REACHABLE", {})
    monkeypatch.setattr(socket, "create_connection", hanging_connect)
    start = time.perf_counter()
    assert registry.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1.0


def test_offline_mode_means_unreachable_without_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("connected although HF_HUB_OFFLINE=1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", must_not_connect)
    assert registry.hub_reachable() is False


def test_a_proxy_is_what_the_check_connects_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert registry._hub_address() == ("proxy.example", 3128)
    monkeypatch.delenv("HTTPS_PROXY")
    for variable in ("https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert registry._hub_address() == ("hub.example", 443)
