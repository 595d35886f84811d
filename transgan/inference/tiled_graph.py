"""A translator as a graph of tileable operations: each node computes any rectangle of its output from
rectangles of its inputs, so a whole network runs exactly on tiles (see transgan.inference.tiled_run).

Local operations (convs, padding, activations) need a rectangle grown by their reach; whole-image ones
(instance norm, batch norm on per-image statistics) need statistics of their full input, which the runner
gathers before any rectangle of them is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.antialias import Downsample, Upsample
from transgan.nets.mobile_resnet import MobileResnetBlock, MobileResnetGenerator, SeparableConv2d
from transgan.nets.resnet import ResnetBlock, ResnetGenerator
from transgan.nets.unet import UnetGenerator, UnetSkipConnectionBlock

Span = tuple[int, int]  # [start, stop) along one axis
Box = tuple[Span, Span]  # rows, columns


@dataclass
class Node:
    """One operation: `kind` says which; `inputs` are node ids; `params` what the kind needs."""

    kind: str
    inputs: list[int]
    params: dict = field(default_factory=dict)
    size: tuple[int, int, int] = (0, 0, 0)  # channels, height, width: filled in by `Graph.shape`


class Graph:
    """Nodes in the order the untiled network runs them (which is also the order dropout masks are drawn)."""

    def __init__(self, input_nc: int):
        self.nodes: list[Node] = [Node("input", [], {"channels": input_nc})]

    def add(self, kind: str, inputs: list[int], **params) -> int:
        self.nodes.append(Node(kind, inputs, params))
        return len(self.nodes) - 1

    @property
    def output(self) -> int:
        return len(self.nodes) - 1

    def shape(self, height: int, width: int) -> None:
        """Fill in every node's (channels, height, width) for an input of `height` x `width`."""
        for node in self.nodes:
            if node.kind == "input":
                node.size = (node.params["channels"], height, width)
            else:
                node.size = _out_size(node, [self.nodes[i].size for i in node.inputs])

    def consumers(self) -> list[list[int]]:
        users: list[list[int]] = [[] for _ in self.nodes]
        for index, node in enumerate(self.nodes):
            for source in node.inputs:
                users[source].append(index)
        return users


def _axis_out(kind: str, p: dict, n: int, axis: int) -> int:
    if kind == "pad":
        return n + p["pad"][axis][0] + p["pad"][axis][1]
    if kind == "conv":
        return (n - p["dilation"][axis] * (p["kernel"][axis] - 1) - 1) // p["stride"][axis] + 1
    if kind == "convT":
        s, k, d = p["stride"][axis], p["kernel"][axis], p["dilation"][axis]
        return (n - 1) * s - 2 * p["padding"][axis] + d * (k - 1) + p["output_padding"][axis] + 1
    if kind == "crop":
        return n - 2 * p["crop"]
    return n


def _out_size(node: Node, sizes: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    channels, height, width = sizes[0]
    if node.kind == "cat":
        channels = sum(size[0] for size in sizes)
    elif node.kind in ("conv", "convT"):
        channels = node.params["out_channels"]
    height, width = (_axis_out(node.kind, node.params, n, axis) for axis, n in enumerate((height, width)))
    if height < 1 or width < 1:
        raise TransganError(f"the image is too small for this network (a {node.kind} layer gets {height}x{width})")
    return channels, height, width


# --- what each node needs of its inputs, and how it computes a rectangle ----------------------------------------


def _pad_index(span: Span, before: int, n: int, mode: str) -> Tensor:
    """Input index of each output position in `span` of a padded axis (-1: a zero-padded position)."""
    index = torch.arange(span[0], span[1]) - before
    if mode == "reflect":
        index = index.abs()
        index = torch.where(index >= n, 2 * (n - 1) - index, index)
    elif mode == "replicate":
        index = index.clamp(0, n - 1)
    else:
        index = torch.where((index >= 0) & (index < n), index, -1)
    return index


def needed(node: Node, box: Box, sizes: list[tuple[int, int, int]]) -> list[Box]:
    """The rectangle of each input that `box` of `node`'s output depends on."""
    p, spans = node.params, []
    for axis, span in enumerate(box):
        n = sizes[0][axis + 1]
        if node.kind == "pad":
            index = _pad_index(span, p["pad"][axis][0], n, p["mode"])
            valid = index[index >= 0]
            spans.append((int(valid.min()), int(valid.max()) + 1) if len(valid) else (0, 0))
        elif node.kind == "conv":
            s, reach = p["stride"][axis], p["dilation"][axis] * (p["kernel"][axis] - 1)
            spans.append((span[0] * s, (span[1] - 1) * s + reach + 1))
        elif node.kind == "convT":
            s, reach = p["stride"][axis], p["dilation"][axis] * (p["kernel"][axis] - 1)
            first = math.ceil((span[0] + p["padding"][axis] - reach) / s)
            last = (span[1] - 1 + p["padding"][axis]) // s
            first, last = max(first, 0), min(last, n - 1)
            spans.append((first, last + 1) if first <= last else (0, 0))
        elif node.kind == "crop":
            spans.append((span[0] + p["crop"], span[1] + p["crop"]))
        else:
            spans.append(span)
    return [(spans[0], spans[1])] * len(node.inputs)


def compute(node: Node, xs: list[Tensor], boxes: list[Box], box: Box, sizes: list[tuple[int, int, int]]) -> Tensor:
    """`box` of `node`'s output from its inputs `xs`, which hold exactly `boxes` of each input."""
    p, kind = node.params, node.kind
    if kind == "pad":
        x = xs[0]
        for axis, span in enumerate(box):
            index = _pad_index(span, p["pad"][axis][0], sizes[0][axis + 1], p["mode"])
            start, dim = boxes[0][axis][0], axis + 2
            if p["mode"] == "zeros":  # x holds the inside run already: add the zero rows around it
                outside = (index < 0).int()
                before = int(outside.cumprod(0).sum())
                after = int(outside.flip(0).cumprod(0).sum()) if before < len(index) else 0
                pads = [0, 0, 0, 0]
                pads[2 * (1 - axis)], pads[2 * (1 - axis) + 1] = before, after
                x = F.pad(x, pads)
            else:
                x = x.index_select(dim, (index - start).to(x.device))
        return x
    if kind == "conv":
        return F.conv2d(xs[0], p["weight"], p["bias"], p["stride"], 0, p["dilation"], p["groups"])
    if kind == "convT":
        return _conv_transpose_box(node, xs[0], boxes[0], box)
    if kind == "crop":
        return xs[0]
    if kind == "pointwise":
        return p["fn"](xs[0])
    if kind == "norm":  # statistics of the whole input, gathered by the runner
        scale, shift = p["scale"], p["shift"]
        return xs[0] * scale.to(xs[0].device).view(1, -1, 1, 1) + shift.to(xs[0].device).view(1, -1, 1, 1)
    if kind == "dropout":  # the full-size mask drawn once, sliced to this rectangle
        mask = p["mask"][:, :, box[0][0] : box[0][1], box[1][0] : box[1][1]]
        return xs[0] * (mask.to(xs[0].device, xs[0].dtype) * p["scale"])
    if kind == "add":
        return xs[0] + xs[1]
    if kind == "cat":
        return torch.cat(xs, 1)
    raise AssertionError(kind)


def _conv_transpose_box(node: Node, x: Tensor, have: Box, box: Box) -> Tensor:
    p = node.params
    out = F.conv_transpose2d(x, p["weight"], None, p["stride"], 0, 0, p["groups"], p["dilation"])
    pads = []
    for axis in (1, 0):  # F.pad order: last dim first
        origin = have[axis][0] * p["stride"][axis] - p["padding"][axis]  # output coordinate of out[..., 0]
        start, stop = box[axis][0] - origin, box[axis][1] - origin
        length = out.shape[2 + axis]
        pads += [-start, stop - length]  # negative pads crop, positive ones add zeros (no contributions)
    out = F.pad(out, pads)
    if p["bias"] is not None:
        out = out + p["bias"].view(1, -1, 1, 1)
    return out


# --- lowering a network into a graph ----------------------------------------------------------------------------


class Lowering:
    """Walks a translator's modules in forward order, adding nodes; knows the test-time `mode`."""

    def __init__(self, mode: str):
        self.mode = mode
        self.graph: Graph | None = None
        # An in-place activation changes the tensor its caller still holds: torch.cat([x, model(x)]) in the
        # U-Net sees x after model's first LeakyReLU(inplace=True). current[id] is that tensor's latest node.
        self.current: dict[int, int] = {}

    def network(self, net: nn.Module, input_nc: int) -> Graph:
        self.graph = Graph(input_nc)
        self.module(net, 0)
        return self.graph

    def latest(self, node: int) -> int:
        while node in self.current:
            node = self.current[node]
        return node

    def module(self, module: nn.Module, x: int) -> int:
        for kind, lower in LOWERINGS:
            if isinstance(module, kind):
                return lower(self, module, x)
        raise TransganError(
            f"tiled translation does not know the layer {type(module).__name__}; run this model without --tile"
        )


def _sequential(lo: Lowering, module: nn.Sequential, x: int) -> int:
    for layer in module:
        x = lo.module(layer, x)
    return x


def _residual(lo: Lowering, module: nn.Module, x: int) -> int:
    branch = lo.module(module.conv_block, x)
    return lo.graph.add("add", [lo.latest(x), branch])


def _unet_block(lo: Lowering, module: UnetSkipConnectionBlock, x: int) -> int:
    inner = lo.module(module.model, x)
    return inner if module.outermost else lo.graph.add("cat", [lo.latest(x), inner])


def _conv(lo: Lowering, module: nn.Conv2d, x: int) -> int:
    if isinstance(module.padding, str):
        raise TransganError(f"tiled translation needs numeric conv padding, not '{module.padding}'")
    if any(module.padding):
        mode = {"zeros": "zeros", "reflect": "reflect", "replicate": "replicate"}.get(module.padding_mode)
        if mode is None:
            raise TransganError(f"tiled translation does not support conv padding mode '{module.padding_mode}'")
        pad = ((module.padding[0],) * 2, (module.padding[1],) * 2)
        x = lo.graph.add("pad", [x], pad=pad, mode=mode)
    return _conv_node(lo, x, module.weight, module.bias, module.stride, module.dilation, module.groups)


def _conv_node(lo: Lowering, x: int, weight: Tensor, bias: Tensor | None, stride, dilation, groups: int) -> int:
    weight = weight.detach().contiguous()
    return lo.graph.add(
        "conv",
        [x],
        weight=weight,
        bias=None if bias is None else bias.detach(),
        stride=tuple(stride),
        dilation=tuple(dilation),
        groups=groups,
        kernel=tuple(weight.shape[2:]),
        out_channels=weight.shape[0],
    )


def _conv_transpose(lo: Lowering, module: nn.ConvTranspose2d, x: int) -> int:
    return _conv_t_node(lo, x, module.weight, module.bias, module.stride, module.padding, module.output_padding,
                        module.dilation, module.groups)  # fmt: skip


def _conv_t_node(lo: Lowering, x: int, weight, bias, stride, padding, output_padding, dilation, groups) -> int:
    weight = weight.detach().contiguous()
    return lo.graph.add(
        "convT",
        [x],
        weight=weight,
        bias=None if bias is None else bias.detach(),
        stride=tuple(stride),
        padding=tuple(padding),
        output_padding=tuple(output_padding),
        dilation=tuple(dilation),
        groups=groups,
        kernel=tuple(weight.shape[2:]),
        out_channels=weight.shape[1] * groups,
    )


def _pad(mode: str) -> Callable[[Lowering, nn.Module, int], int]:
    def lower(lo: Lowering, module: nn.Module, x: int) -> int:
        left, right, top, bottom = module.padding
        return lo.graph.add("pad", [x], pad=((top, bottom), (left, right)), mode=mode)

    return lower


def _pointwise(fn: Callable[[Tensor], Tensor], in_place: bool, lo: Lowering, x: int) -> int:
    node = lo.graph.add("pointwise", [x], fn=fn)
    if in_place:
        lo.current[x] = node
    return node


def _norm(lo: Lowering, module: nn.Module, x: int) -> int:
    """Instance norm, or batch norm: whole-image statistics where the untiled network uses the input's own."""
    weight = module.weight.detach() if module.affine else None
    bias = module.bias.detach() if module.affine else None
    if isinstance(module, nn.InstanceNorm2d):
        own_stats = not module.track_running_stats or module.running_mean is None
    else:  # batch norm: 'reference' normalises each image by its own statistics, as does eval without running ones
        own_stats = lo.mode == "reference" or module.running_mean is None
    if own_stats:
        return lo.graph.add("norm", [x], weight=weight, bias=bias, eps=module.eps)
    # Running statistics (batch norm in eval mode): a fixed per-channel affine, as local as a ReLU.
    scale = torch.rsqrt(module.running_var.detach() + module.eps)
    shift = -module.running_mean.detach() * scale
    if weight is not None:
        scale, shift = scale * weight, shift * weight + bias
    s, t = scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
    return lo.graph.add("pointwise", [x], fn=lambda v: v * s.to(v.device) + t.to(v.device))


def _dropout(lo: Lowering, module: nn.Dropout, x: int) -> int:
    if lo.mode != "reference":
        return x
    return lo.graph.add("dropout", [x], p=module.p)


def _downsample(lo: Lowering, module: Downsample, x: int) -> int:
    x = lo.graph.add("pad", [x], pad=((1, 1), (1, 1)), mode="reflect")
    return _conv_node(lo, x, module.filt, None, (2, 2), (1, 1), module.channels)


def _upsample(lo: Lowering, module: Upsample, x: int) -> int:
    x = lo.graph.add("pad", [x], pad=((1, 1), (1, 1)), mode="replicate")
    x = _conv_t_node(lo, x, module.filt, None, (2, 2), (2, 2), (0, 0), (1, 1), module.channels)
    return lo.graph.add("crop", [x], crop=1)


def _mobile(lo: Lowering, module: MobileResnetGenerator, x: int) -> int:
    x = lo.graph.add("pointwise", [x], fn=lambda v: v.clamp(-1, 1))
    return lo.module(module.model, x)


LOWERINGS: list[tuple[type, Callable]] = [
    (MobileResnetGenerator, _mobile),
    ((ResnetGenerator, UnetGenerator), lambda lo, m, x: lo.module(m.model, x)),
    (SeparableConv2d, lambda lo, m, x: lo.module(m.conv, x)),
    ((ResnetBlock, MobileResnetBlock), _residual),
    (UnetSkipConnectionBlock, _unet_block),
    (nn.Sequential, _sequential),
    (nn.Conv2d, _conv),
    (nn.ConvTranspose2d, _conv_transpose),
    (nn.ReflectionPad2d, _pad("reflect")),
    (nn.ReplicationPad2d, _pad("replicate")),
    (nn.ZeroPad2d, _pad("zeros")),
    ((nn.InstanceNorm2d, nn.BatchNorm2d), _norm),
    (nn.Dropout, _dropout),
    (Downsample, _downsample),
    (Upsample, _upsample),
    (nn.Identity, lambda lo, m, x: x),
    (nn.ReLU, lambda lo, m, x: _pointwise(torch.relu, m.inplace, lo, x)),
    (nn.LeakyReLU, lambda lo, m, x: _pointwise(lambda v, s=m.negative_slope: F.leaky_relu(v, s), m.inplace, lo, x)),
    (nn.Tanh, lambda lo, m, x: _pointwise(torch.tanh, False, lo, x)),
    (nn.Sigmoid, lambda lo, m, x: _pointwise(torch.sigmoid, False, lo, x)),
]


def lower(net: nn.Module, input_nc: int, mode: str) -> Graph:
    """The graph of translator `net` run the test-time way `mode` ('reference' or 'eval')."""
    return Lowering(mode).network(net, input_nc)
