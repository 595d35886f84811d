"""Convert an fp32 ONNX graph to fp16 while keeping precision-sensitive ops (normalisation, reductions) in fp32."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Ops that run in fp16: convolutions, pointwise activations and layout ops whose float inputs are all data.
# Everything else keeps fp32, the safe default for an op we do not know.
FP16_OPS = {
    "Abs", "Add", "AveragePool", "Clip", "Concat", "Conv", "ConvTranspose", "Dropout", "Elu", "Expand",
    "Flatten", "Gather", "Gemm", "Identity", "LeakyRelu", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad",
    "Relu", "Reshape", "Sigmoid", "Slice", "Split", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
}  # fmt: skip
# Kept in fp32 on purpose (not merely unlisted): InstanceNormalization sums H*W squared deviations, which
# overflows fp16 (max 65504) at 256x256; BatchNormalization/LayerNormalization/GroupNormalization and the
# reductions (ReduceMean, ReduceSum, Pow, Sqrt, Div, Softmax, Exp, Log) lose too much in fp16.
FP32_OPS_REASON = "normalisation and reductions need fp32 accumulation"


def _cast(name: str, output: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [name], [output], to=to, name=f"{output}_cast")


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing FP16_OPS in fp16; graph inputs and outputs stay fp32.

    Each float tensor gets one precision (its producer's); where a consumer needs the other one a Cast is
    inserted once per tensor. Weights used only by fp16 ops are stored as fp16 (half the file size).
    """
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    float_tensors = {v.name for v in [*graph.input, *graph.value_info, *graph.output]
                     if v.type.tensor_type.elem_type == TensorProto.FLOAT}  # fmt: skip
    initializers = {init.name: init for init in graph.initializer}
    float_tensors |= {name for name, init in initializers.items() if init.data_type == TensorProto.FLOAT}

    def runs_fp16(node: onnx.NodeProto) -> bool:
        return (
            node.op_type in FP16_OPS
            and node.domain in ("", "ai.onnx")
            and any(name in float_tensors for name in node.input)
        )

    # Initializers consumed only by fp16 nodes become fp16; shared ones stay fp32 and get a Cast.
    consumers: dict[str, list[bool]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(runs_fp16(node))
    fp16_tensors = set()  # float tensors stored in fp16
    for name, init in initializers.items():
        if init.data_type == TensorProto.FLOAT and consumers.get(name) and all(consumers[name]):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name))
            fp16_tensors.add(name)

    nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, bool], str] = {}  # (tensor, to_fp16) -> casted name

    def as_precision(name: str, want_fp16: bool) -> str:
        if name not in float_tensors or (name in fp16_tensors) == want_fp16:
            return name
        key = (name, want_fp16)
        if key not in casts:
            casts[key] = f"{name}_{'fp16' if want_fp16 else 'fp32'}"
            nodes.append(_cast(name, casts[key], TensorProto.FLOAT16 if want_fp16 else TensorProto.FLOAT))
        return casts[key]

    for node in graph.node:
        fp16 = runs_fp16(node)
        inputs = [as_precision(name, fp16) if name else name for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if fp16:
            fp16_tensors.update(name for name in node.output if name in float_tensors)
        nodes.append(node)

    # Graph outputs keep fp32: rename an fp16 producer's output and cast back under the public name.
    for output in graph.output:
        if output.name in fp16_tensors:
            inner = f"{output.name}_fp16"
            for node in nodes:
                node.input[:] = [inner if name == output.name else name for name in node.input]
                node.output[:] = [inner if name == output.name else name for name in node.output]
            nodes.append(_cast(inner, output.name, TensorProto.FLOAT))

    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 types; re-inferred below
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model
