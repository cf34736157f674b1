"""Make ``minilm-l3-onnxruntime.npz``: onnxruntime's outputs of the ONNX paraphrase-MiniLM-L3-v2 on three texts.

Run once, where onnxruntime is installed (it is not a dependency of the compendium):
``python tests/data/make_minilm_l3_reference.py <the .onnx file> <the tokenizer's vocab.txt folder>``.
Stores the texts, the token ids and attention mask it ran on (a right-padded batch), the last hidden state
(the output named ``onnx::Shape_422``) and the mean-pooled sentence embedding (``461``), both
float32; ``tests/integration/test_assembled_models.py`` compares the converted ``BertModel`` with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on a stage while the audience listens.",
    "The quarterly report shows revenue fell by three percent.",
]


def main(onnx_file: str, tokenizer_folder: str) -> None:
    tokenizer = Tokenizer.from_file(str(Path(tokenizer_folder) / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(TEXTS)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True))
    target = Path(__file__).with_name("minilm-l3-onnxruntime.npz")
    np.savez_compressed(
        target,
        texts=np.array(TEXTS),
        input_ids=ids,
        attention_mask=mask,
        last_hidden_state=outputs["onnx::Shape_422"].astype(np.float32),
        sentence_embedding=outputs["461"].astype(np.float32),
        onnxruntime_version=np.array(onnxruntime.__version__),
    )
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
