"""The layer-activation measurement counts what autograd saves (checked on functions whose saved tensors
are known by hand), and its committed result reconciles with the chapter's activation models
(Korthikanti et al.'s GPT count and the Llama count of chipbook.memory) to the byte, once the terms
the models leave out are added."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from chipbook import data, memory
from chipbook.experiments import layer_activations as la

torch = pytest.importorskip("torch")


def test_saved_storages_counts_inputs_results_and_weights_by_hand():
    x = torch.ones(3, 4, dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(4, 5, dtype=torch.bfloat16, requires_grad=True)
    rows = la.saved_storages(lambda t: torch.tanh(t @ w), x, {"w": w})
    # mm saves its two inputs, tanh its result: x (3·4·2 bytes), w (4·5·2, a weight), tanh(x·w) (3·5·2)
    assert sorted((r["saved_by"], r["bytes"], r["weight"]) for r in rows) == [
        ("Mm", 24, "no"), ("Mm", 40, "yes"), ("Tanh", 30, "no")]
    assert {r["shape"] for r in rows} == {"3×4", "4×5", "3×5"}
    assert {r["dtype"] for r in rows} == {"bfloat16"}


def test_saved_storages_counts_a_storage_saved_through_two_views_once():
    x = torch.ones(2, 8, dtype=torch.float32, requires_grad=True)

    def f(t):
        e = t.exp()  # exp saves its result e (2·8·4 = 64 bytes) ...
        return e[0] * e[1]  # ... and mul saves two views of it: still one storage

    assert [(r["saved_by"], r["bytes"]) for r in la.saved_storages(f, x, {})] == [("Exp+Mul", 64)]


def _model(point: pd.Series) -> float:
    s, b, h, a = (int(point[k]) for k in ("seq", "batch", "hidden", "heads"))
    if point["variant"] == "gpt":
        return memory.activation_bytes(s, b, h, a, 1)
    if point["variant"] == "gpt-sdpa":
        return memory.activation_bytes(s, b, h, a, 1, recompute="selective")
    return memory.llama_activation_bytes(s, b, h, a, int(point["kv_heads"]), int(point["ffn"]), 1)


def test_measured_layers_reconcile_with_the_models_term_by_term():
    frame = data.result("layer_activations")
    assert frame["point"].nunique() == len(la.CONFIG["grid"])
    for _, rows in frame.groupby("point"):
        point = rows.iloc[0]
        measured = rows.loc[rows["weight"] == "no", "bytes"].sum()
        left = measured - _model(point) - sum(la.unmodelled(rows).values())
        assert left == 0, f"point {point['point']} ({point['variant']}): {left} bytes unexplained"
        if point["variant"] == "llama-fused":  # fused kernels: the model within its norm statistics
            assert measured == pytest.approx(_model(point), rel=2e-3)


def test_only_the_written_out_attention_keeps_score_sized_tensors():
    """PyTorch's CPU scaled_dot_product_attention (no dropout) runs a FlashAttention kernel: no
    saved tensor has attention's a·s×s shape; the written-out GPT attention keeps three."""
    frame = data.result("layer_activations")
    for variant, rows in frame.groupby("variant"):
        scores = [math.prod(int(n) for n in shape.split("×")) == a * b * s * s and shape.endswith(f"×{s}×{s}")
                  for shape, s, b, a in zip(rows["shape"], rows["seq"], rows["batch"], rows["heads"],
                                            strict=True)]
        square = rows[scores]
        per_point = square.groupby("point").size()
        assert per_point.tolist() == ([3] * len(la.SHAPES) if variant == "gpt" else []), variant
        if variant != "gpt":
            assert rows["saved_by"].str.contains("ScaledDotProductFlashAttentionForCpu").any()


def test_llama_ffn_width():
    assert la.llama_ffn(4096) == 11008  # Llama 2 7B's released configuration
    with pytest.raises(ValueError, match="hidden"):
        la.llama_ffn(0)


def test_dropout_masks_cpu_against_the_fused_kernel():
    """The chapter's dropout-mask term: on the CPU, F.dropout keeps a mask of the input's type (2 bytes
    a value in bf16); native_dropout, PyTorch's fused kernel, keeps a 1-byte boolean mask, as
    Korthikanti et al. count it."""
    x = torch.ones(4, 8, dtype=torch.bfloat16, requires_grad=True)
    cpu = la.saved_storages(lambda t: torch.nn.functional.dropout(t, 0.1, training=True), x, {})
    fused = la.saved_storages(lambda t: torch.native_dropout(t, 0.1, True)[0], x, {})
    assert [(r["dtype"], r["bytes"]) for r in cpu] == [("bfloat16", 64)]
    assert [(r["saved_by"], r["dtype"], r["bytes"]) for r in fused] == [("NativeDropout", "bool", 32)]


def test_llama_layers_keep_each_class_of_tensor_the_model_counts():
    """Per tensor class, whatever the shapes: the fused layer keeps three storages of s·b·f values (gate,
    up, product) and the unfused one four (with the SiLU's output); both keep the keys and the values
    as s·b·h·a_kv/a values each (grouped-query attention, not repeated) and six storages of s·b·h values
    beside them (the layer's input, the first norm's output, the queries, attention's output, the
    second norm's input and output)."""
    frame = data.result("layer_activations")
    llama = frame[frame["variant"].str.startswith("llama") & (frame["weight"] == "no")]
    assert llama["point"].nunique() == 2 * (len(la.SHAPES) + len(la.LLAMA_SHAPES))
    for _, rows in llama.groupby("point"):
        p = rows.iloc[0]
        tokens, h, f = int(p["seq"] * p["batch"]), int(p["hidden"]), int(p["ffn"])
        kv = h * int(p["kv_heads"]) // int(p["heads"])
        bf16 = rows[rows["dtype"] == "bfloat16"]["bytes"].tolist()
        assert bf16.count(2 * tokens * f) == (3 if p["variant"] == "llama-fused" else 4), p["point"]
        if kv < h:
            assert bf16.count(2 * tokens * kv) == 2, p["point"]
        if p["variant"] == "llama-fused":
            assert bf16.count(2 * tokens * h) == (6 if kv < h else 8), p["point"]
