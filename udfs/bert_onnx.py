"""A BERT sentence encoder as an ONNX graph, built from safetensors weights (pure; no PyTorch).

`build_sentence_encoder(weights, config)` returns an `onnx.ModelProto` computing, for a batch of
token ids and their attention mask, the model card's sentence embedding of a sentence-transformers
BERT model (all-MiniLM-L6-v2 and its kind): the standard BERT encoder (post-LayerNorm, exact erf
GELU, scaled dot-product attention over the real tokens), mean pooling over the real tokens,
L2 normalization. It is the same computation as Hugging Face's `BertModel` + sentence-transformers'
`Pooling(mean)` + `Normalize`, written with the `onnx` package's helper API so that ONNX Runtime
(onnxruntime, CPU) runs it with its fused kernels (LayerNormalization, Gelu, MatMul+bias).

Graph signature (ONNX opset 17):
- inputs  `input_ids` int64 (batch, tokens), `attention_mask` int64 (batch, tokens) (1 = real token);
- output  `sentence_embedding` float32 (batch, hidden_size), rows of unit L2 norm (a row whose
  mask is all zero is the zero vector's normalization guard: divided by max(norm, 1e-12)).

`padded=False` builds the unpadded variant (issue 24, the int8 model's source graph): every row of a
batch is a real text of the same length, so there is no padding to mask. Its only input is
`input_ids` int64 (batch, tokens); self-attention is ONNX Runtime's contrib operator
`com.microsoft::MultiHeadAttention` (query, key, value (batch, tokens, hidden_size), `num_heads`, no
mask: the CPU kernel's fused path, no additive-mask Add or separate Softmax and head transposes) and
pooling is the plain mean over the tokens. Same vectors as the padded graph on such batches (within
1e-6 cosine; tests/unit/test_embeddings.py); on a batch with padding it would attend to the padding,
so its caller must batch texts of equal token length (`udfs.embeddings.unpadded_batches`).

`weights` maps the Hugging Face `BertModel` parameter names (`embeddings.word_embeddings.weight`,
`encoder.layer.{i}.attention.self.query.weight`, …; an optional `bert.` prefix is accepted) to
float32 numpy arrays, as `safetensors.numpy.load_file` returns them; `config` is the model's
`config.json` (hidden_size, num_hidden_layers, num_attention_heads, layer_norm_eps). A missing
parameter raises KeyError naming it; a hidden_act other than gelu raises ValueError.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

OPSET = 17
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators (MultiHeadAttention), opset 1
INPUT_IDS, ATTENTION_MASK, OUTPUT = "input_ids", "attention_mask", "sentence_embedding"


class _Graph:
    """Collects nodes and initializers; `op` returns the output name of the node it adds."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n{self._n}", **attrs))
        return out


def _param(weights: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    for key in (name, "bert." + name):
        if key in weights:
            return np.asarray(weights[key], dtype=np.float32)
    raise KeyError(f"BERT weights have no {name!r}")


def build_sentence_encoder(weights: Mapping[str, np.ndarray], config: Mapping,
                           padded: bool = True, fused_attention: bool = False) -> "onnx.ModelProto":  # noqa: F821
    """The ONNX model described in the module docstring (checked with `onnx.checker`); `padded`
    False: the unpadded variant (input_ids only, MultiHeadAttention without a mask). `fused_attention`
    (padded only): same inputs and output as the padded graph, but self-attention as
    MultiHeadAttention with the batch's key lengths (the sum of each mask row, int32) as its
    right-padding key mask; same vectors within 1e-6 cosine. Not used by `udfs.embeddings`: measured
    for issue 24 (bench_embeddings.py --tries, bench/README.md: 0.87-0.94x the unpadded int8 graph)."""
    import onnx
    from onnx import TensorProto, helper

    if str(config.get("hidden_act", "gelu")) != "gelu":
        raise ValueError(f"hidden_act {config.get('hidden_act')!r} is not supported (only exact gelu)")
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    g = _Graph()
    p = lambda name: _param(weights, name)  # noqa: E731

    def linear(x: str, name: str) -> str:  # x @ W.T + b (HF stores W as (out, in))
        w = g.const(name + ".weight.T", p(name + ".weight").T)
        return g.op("Add", g.op("MatMul", x, w), g.const(name + ".bias", p(name + ".bias")))

    def layer_norm(x: str, name: str) -> str:
        return g.op("LayerNormalization", x, g.const(name + ".weight", p(name + ".weight")),
                    g.const(name + ".bias", p(name + ".bias")), axis=-1, epsilon=eps)

    i64 = lambda name, v: g.const(name, np.asarray(v, dtype=np.int64))  # noqa: E731
    f32 = lambda name, v: g.const(name, np.asarray(v, dtype=np.float32))  # noqa: E731

    # embeddings: word + absolute position + token type 0, then LayerNorm
    word = g.op("Gather", g.const("word_embeddings", p("embeddings.word_embeddings.weight")), INPUT_IDS, axis=0)
    pos = g.op("Slice", g.const("position_embeddings", p("embeddings.position_embeddings.weight")),
               i64("zero", [0]), g.op("Shape", INPUT_IDS, start=1, end=2), i64("axis0", [0]))
    token_type = g.const("token_type_0", p("embeddings.token_type_embeddings.weight")[0])
    x = layer_norm(g.op("Add", g.op("Add", word, pos), token_type), "embeddings.LayerNorm")

    if padded and fused_attention:
        # key lengths (batch,) int32: MultiHeadAttention's right-padding key mask
        mask = g.op("Cast", ATTENTION_MASK, to=TensorProto.FLOAT)
        key_lengths = g.op("Cast", g.op("ReduceSum", ATTENTION_MASK, i64("axis1_len", [1]), keepdims=0),
                           to=TensorProto.INT32)
    elif padded:
        # additive attention bias (batch, 1, 1, tokens): 0 on real tokens, -1e9 on padding
        mask = g.op("Cast", ATTENTION_MASK, to=TensorProto.FLOAT)
        bias = g.op("Unsqueeze", g.op("Mul", g.op("Sub", f32("f_one", 1.0), mask), f32("neg_big", -1e9)),
                    i64("axes12", [1, 2]))
        split_heads = i64("split_heads", [0, 0, heads, head_dim])
        merge_heads = i64("merge_heads", [0, 0, hidden])
        scale = f32("scale", 1.0 / np.sqrt(head_dim))
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        if padded and not fused_attention:
            q = g.op("Transpose", g.op("Reshape", linear(x, pre + "attention.self.query"), split_heads),
                     perm=[0, 2, 1, 3])
            k = g.op("Transpose", g.op("Reshape", linear(x, pre + "attention.self.key"), split_heads),
                     perm=[0, 2, 3, 1])
            v = g.op("Transpose", g.op("Reshape", linear(x, pre + "attention.self.value"), split_heads),
                     perm=[0, 2, 1, 3])
            scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
            context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
            context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        else:  # scale defaults to 1/sqrt(head_dim), as above
            qkv = [linear(x, pre + f"attention.self.{n}") for n in ("query", "key", "value")]
            context = g.op("MultiHeadAttention", *qkv, *(["", key_lengths] if padded else []), domain=MS_DOMAIN,
                           num_heads=heads)
        x = layer_norm(g.op("Add", x, linear(context, pre + "attention.output.dense")),
                       pre + "attention.output.LayerNorm")
        h = linear(x, pre + "intermediate.dense")
        gelu = g.op("Mul", g.op("Mul", h, f32(f"half_{i}", 0.5)),
                    g.op("Add", g.op("Erf", g.op("Div", h, f32(f"sqrt2_{i}", np.sqrt(2.0)))), f32(f"g_one_{i}", 1.0)))
        x = layer_norm(g.op("Add", x, linear(gelu, pre + "output.dense")), pre + "output.LayerNorm")

    # mean pooling over real tokens, then L2 normalization
    if padded:
        summed = g.op("ReduceSum", g.op("Mul", x, g.op("Unsqueeze", mask, i64("axis2", [2]))), i64("axis1", [1]),
                      keepdims=0)
        count = g.op("Max", g.op("ReduceSum", mask, i64("axis1_", [1]), keepdims=1), f32("min_count", 1.0))
        pooled = g.op("Div", summed, count)
    else:
        pooled = g.op("ReduceMean", x, axes=[1], keepdims=0)  # opset 17: axes is an attribute
    norm = g.op("Max", g.op("ReduceL2", pooled, axes=[1], keepdims=1), f32("min_norm", 1e-12))
    g.nodes.append(helper.make_node("Div", [pooled, norm], [OUTPUT], name="normalize"))

    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "tokens"])]
    if padded:
        inputs.append(helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "tokens"]))
    graph = helper.make_graph(g.nodes, "sentence_encoder", inputs,
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", hidden])],
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]
                              + ([helper.make_opsetid(MS_DOMAIN, 1)] if fused_attention or not padded else []),
                              producer_name="taskseed.udfs.bert_onnx")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model
