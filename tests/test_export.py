"""ONNX export: parity for every registered generator, dynamic shapes, fp16, metadata, conditional inputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import transgan
from transgan.errors import TransganError
from transgan.export.fp16 import convert_to_fp16
from transgan.export.onnx import FP16_TOLERANCE, export_onnx
from transgan.nets import build_network, network_options
from transgan.registry import list_models

# Small widths keep each export and parity run to seconds on a CPU.
SMALL = {"ngf": 4, "channels": "4_4_4_4_4_4_4_4", "latent_dim": 8, "image_size": 16, "embed_dim": 4}
GENERATORS = list_models("translator") + list_models("sampler")


def small_generator(arch: str, **extra) -> torch.nn.Module:
    options = network_options(arch)
    # Same name, same type: `channels` is a width string for mobile_resnet but the image channels elsewhere.
    config = {key: value for key, value in SMALL.items() if isinstance(options.get(key), type(value))}
    torch.manual_seed(0)
    net = build_network(arch, **{**config, **extra}).eval()
    # Weights of a trained net's scale: the init's std 0.02 makes every output ~0 and parity trivial.
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.dim() > 1:  # conv / linear / embedding: unit gain keeps activations near 1
                parameter.normal_(0.0, parameter[0].numel() ** -0.5)
            else:  # norm scales around 1, biases around 0
                parameter.normal_(float(parameter.mean().round()), 0.1)
    return net


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", GENERATORS)
def test_every_registered_generator_exports_within_1e4(arch, tmp_path):
    net = small_generator(arch)
    report = export_onnx(net, tmp_path / f"{arch}.onnx")
    assert report.max_abs_diff <= 1e-4
    assert report.opset >= 17
    assert onnx.load(str(report.path)).opset_import[0].version >= 17


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    """A two-direction cyclegan-like model file and its AtoB export."""
    folder = tmp_path_factory.mktemp("resnet")
    nets = {"G_A": small_generator("resnet_6blocks"), "G_B": small_generator("resnet_6blocks")}
    model = transgan.save(
        nets, folder / "model.safetensors", task="cyclegan", directions={"AtoB": "G_A", "BtoA": "G_B"}
    )
    report = export_onnx(model, folder / "model.onnx", direction="BtoA")
    return nets, report


def test_dynamic_batch_height_width_through_one_file(resnet_onnx):
    nets, report = resnet_onnx
    assert report.dynamic == ["batch", "height", "width"]
    runner = session(report.path)
    for shape in [(1, 3, 36, 52), (3, 3, 64, 28)]:
        x = torch.rand(*shape) * 2 - 1
        (ours,) = runner.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = nets["G_B"](x).numpy()
        assert ours.shape == expected.shape
        assert np.abs(ours - expected).max() <= 1e-4


def test_metadata_round_trip(resnet_onnx):
    _, report = resnet_onnx
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    meta = json.loads(props["transgan"])
    assert meta == report.metadata
    assert meta["task"] == "cyclegan" and meta["direction"] == "BtoA" and meta["arch"] == "resnet_6blocks"
    assert meta["size_multiple"] == 4 and meta["input_nc"] == 3 and meta["output_nc"] == 3
    assert meta["normalization"] == {"mean": 0.5, "std": 0.5}
    assert meta["transgan_version"] == transgan.__version__
    # Plain fields are also readable on their own (netron, onnx tools).
    assert props["direction"] == "BtoA" and props["size_multiple"] == "4"


def test_fp16_export_keeps_instance_norm_fp32_and_stays_within_tolerance(tmp_path):
    net = small_generator("resnet_6blocks")
    report = export_onnx(net, tmp_path / "half.onnx", fp16=True)
    assert report.precision == "fp16" and report.max_abs_diff <= FP16_TOLERANCE
    model = onnx.shape_inference.infer_shapes(onnx.load(str(report.path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    norms = [node for node in model.graph.node if node.op_type == "InstanceNormalization"]
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert norms and convs
    assert all(types[node.input[0]] == onnx.TensorProto.FLOAT for node in norms)
    assert all(types[node.input[1]] == onnx.TensorProto.FLOAT16 for node in convs)  # fp16 weights
    # Inputs and outputs stay fp32, so engines feed the same arrays either way.
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 40, 32)).astype(np.float32)
    (ours,) = session(report.path).run(None, {"input": x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(ours - expected).max() <= FP16_TOLERANCE


def test_fp16_conversion_of_a_tiny_graph_casts_once_per_tensor():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 4])
    scale = onnx.numpy_helper.from_array(np.ones(2, np.float32), "scale")
    bias = onnx.numpy_helper.from_array(np.zeros(2, np.float32), "bias")
    nodes = [
        onnx.helper.make_node("Relu", ["x"], ["a"]),
        onnx.helper.make_node("InstanceNormalization", ["a", "scale", "bias"], ["b"]),
        onnx.helper.make_node("Add", ["b", "a"], ["y"]),
    ]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], [scale, bias])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10)
    half = convert_to_fp16(model)
    ops = [node.op_type for node in half.graph.node]
    assert ops.count("Cast") == 4  # x->fp16, a->fp32 for the norm, b->fp16 for the add, y back to fp32
    value = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    (ours,) = session_from_proto(half).run(None, {"x": value})
    (reference,) = session_from_proto(model).run(None, {"x": value})
    assert np.abs(ours - reference).max() < 1e-2


def session_from_proto(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_conditional_generator_exports_noise_and_class_inputs(tmp_path):
    sampler = next(arch for arch in list_models("sampler") if "num_classes" in network_options(arch))
    net = small_generator(sampler, num_classes=3)
    path = transgan.save(net, tmp_path / "cgan.safetensors", task="cgan", class_names=["a", "b", "c"])
    report = export_onnx(path, tmp_path / "cgan.onnx")
    assert report.inputs == ["noise", "class"] and report.metadata["class_names"] == ["a", "b", "c"]
    runner = session(report.path)
    assert [i.name for i in runner.get_inputs()] == ["noise", "class"]
    noise = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    for label in range(3):
        labels = np.full(4, label, dtype=np.int64)
        (ours,) = runner.run(None, {"noise": noise, "class": labels})
        with torch.no_grad():
            expected = net(torch.from_numpy(noise), torch.from_numpy(labels)).numpy()
        assert np.abs(ours - expected).max() <= 1e-4


def test_static_shape_and_fixed_batch(tmp_path):
    report = export_onnx(small_generator("resnet_6blocks"), tmp_path / "s.onnx", static_shape=(32, 48), batch=1)
    assert report.dynamic == []
    dims = onnx.load(str(report.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 48]


def test_clear_errors(tmp_path):
    with pytest.raises(TransganError, match="opset 18 or newer"):
        export_onnx(small_generator("resnet_6blocks"), tmp_path / "x.onnx", opset=13)
    with pytest.raises(TransganError, match="not a generator"):
        export_onnx(build_network("pixel", ndf=4), tmp_path / "d.onnx")
    with pytest.raises(TransganError, match="multiples of 4"):
        export_onnx(small_generator("resnet_6blocks"), tmp_path / "x.onnx", static_shape=(30, 30))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("size", [(12, 12), (9, 14)])
def test_winograd_conv_matches_the_direct_conv(padding, size):
    """Any height and width (tiles are padded and cropped), with and without the conv's own zero padding."""
    from transgan.export.fast import WinogradConv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 72, 3, padding=padding)
    torch.nn.init.normal_(conv.weight, 0.0, (64 * 9) ** -0.5)
    x = torch.randn(2, 64, *size)
    with torch.no_grad():
        expected, ours = conv(x), WinogradConv2d(conv)(x)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < 1e-4


@pytest.mark.parametrize("padding", [0, 3])
def test_few_output_conv_as_transposed_conv_matches(padding):
    from transgan.export.fast import FewOutputConv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 3, 7, padding=padding)
    x = torch.randn(2, 16, 11, 13)
    with torch.no_grad():
        expected, ours = conv(x), FewOutputConv2d(conv)(x)
    assert ours.shape == expected.shape and (ours - expected).abs().max() < 1e-5


def test_cpu_rewrites_keep_the_network_output_and_leave_the_original_alone():
    from transgan.export.fast import FewOutputConv2d, WinogradConv2d, optimize_for_cpu

    net = small_generator("resnet_6blocks", ngf=16)  # 64-channel residual convs: the Winograd ones
    fast, applied = optimize_for_cpu(net)
    assert applied == ["few_output_conv_transpose", "winograd_f4x4_3x3"]
    assert sum(isinstance(m, WinogradConv2d) for m in fast.modules()) == 12
    assert sum(isinstance(m, FewOutputConv2d) for m in fast.modules()) == 1
    assert not any(isinstance(m, (WinogradConv2d, FewOutputConv2d)) for m in net.modules())
    x = torch.rand(1, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        assert (fast(x) - net(x)).abs().max() < 1e-4


def test_for_cpu_export_records_its_rewrites_and_refuses_fp16(tmp_path):
    net = small_generator("mobile_resnet")  # 4-channel widths: only the 3-output final conv is rewritten
    report = export_onnx(net, tmp_path / "cpu.onnx", for_cpu=True)
    assert report.metadata["rewrites"] == ["few_output_conv_transpose"] and report.max_abs_diff < 1e-4
    ops = {node.op_type for node in onnx.load(str(tmp_path / "cpu.onnx")).graph.node}
    assert "ConvTranspose" in ops
    with pytest.raises(TransganError, match="--for-cpu and --fp16"):
        export_onnx(net, tmp_path / "x.onnx", for_cpu=True, fp16=True)


def test_reference_test_time_mode_exports_per_image_batch_norm_without_dropout(tmp_path):
    """A pix2pix model file exports the reference's test-time mode: batch norm on each image, no dropout."""
    from transgan.nets import test_time as test_time_module

    net = small_generator("unet", num_downs=6, norm="batch", dropout=True)  # one dropout level, 64-pixel multiple
    path = transgan.save(net, tmp_path / "p2p.safetensors", task="pix2pix", directions={"AtoB": "G"})
    report = export_onnx(path, tmp_path / "p2p.onnx")
    meta = report.metadata
    assert meta["test_time"] == "reference" and "test-time dropout left out" in meta["test_time_note"]
    assert "test-time dropout left out" in report.summary()
    ops = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert "InstanceNormalization" in ops and not ops & {"BatchNormalization", "Dropout"}
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 64, 128)).astype(np.float32)
    (ours,) = session(report.path).run(None, {"input": x})
    (first,) = session(report.path).run(None, {"input": x[:1]})
    with torch.no_grad(), test_time_module.test_time(net, "reference", dropout=False):
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(ours - expected).max() <= 1e-4 and np.abs(ours[:1] - first).max() <= 1e-5
    assert not any("forward" in vars(module) for module in net.modules())  # the network is given back as it was
