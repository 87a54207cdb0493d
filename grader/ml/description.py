"""What the checks read about a student's model, made from the grader's own rebuild and trace.

Every fact here comes from the validated description (graph.py) and from
running the rebuild (analysis.py), never from the student's objects: the
layers a check counts are the standard torch.nn layers the traced forward
pass calls; a subclass that overrides forward is a custom layer; the function
joining two layers is read off the graph. The feature maps, layer by layer,
are the shapes the rebuild's nodes gave when the analysis ran it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from grader.child import ops
from grader.ml.analysis import Analysis
from grader.ml.graph import ModelGraph, Node, NodeRef

# The functions that may join two layers, in the words a student reads.
FUNCTIONS = {
    "identity": "nothing", "relu": "a ReLU", "sigmoid": "a sigmoid", "tanh": "a tanh", "softmax": "a softmax",
    "log-softmax": "a log-softmax", "hardtanh": "a hardtanh", "relu6": "a ReLU6", "hardsigmoid": "a hard sigmoid",
    "softplus": "a softplus", "elu": "an ELU", "leaky-relu": "a leaky ReLU", "gelu": "a GELU", "silu": "a SiLU",
    "selu": "a SELU", "mish": "a Mish", "hardswish": "a hard swish", "prelu": "a PReLU", "exp": "an exp",
    "clamp": "a clamp", "other": "something else",
}
_ACTIVATION_OF = {kind: name for name, kinds in ops.ACTIVATIONS.items() for kind in kinds}
# functions and tensor methods that a feature-map table lists beside the torch.nn layers: the ones that act
# as a layer does (activations, convolutions, pooling, reshaping), not arithmetic on sizes
LAYER_FUNCTIONS = frozenset({*_ACTIVATION_OF, *ops.PASS_THROUGH, "F.conv2d", "F.max_pool2d", "F.avg_pool2d",
                             "F.adaptive_avg_pool2d", "F.linear", "F.layer_norm"}) - {"float", "contiguous",
                                                                                      "detach", "clone"}


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    module: str  # "torch.nn" for a standard layer, "notebook" for a custom one
    params: int
    in_features: int | None = None
    out_features: int | None = None

    @property
    def from_torch(self) -> bool:
        return self.module.startswith("torch.nn")

    @property
    def is_linear(self) -> bool:
        return self.type == "Linear" and self.from_torch

    def shape_text(self) -> str:
        if self.in_features is not None and self.out_features is not None:
            return f"{self.type}({self.in_features} → {self.out_features})"
        return self.type


@dataclass(frozen=True)
class FeatureMap:
    """One step of the forward pass and the shape of what it gives for one sample."""

    name: str  # the module's path, or the traced node's name for a function
    kind: str  # e.g. "Conv2d(1 → 16, kernel 3)", "MaxPool2d(2)", "F.relu", ".view()"
    shape: tuple[int, ...]
    params: int | None = None  # a torch.nn layer's own parameters; None for a function


@dataclass(frozen=True)
class ModelDescription:
    is_module: bool
    type_name: str = ""
    refused_params: int | None = None  # build refused: this many parameters planned
    class_name: str = ""
    layers: tuple[Layer, ...] = ()
    total_params: int = 0
    trainable_params: int | None = None
    buffer_values_read: int = 0  # values of buffers the forward reads outside standard layers
    input_style: str | None = None  # "image" | "flat" | "features"
    tuple_index: int | None = None
    tuple_length: int | None = None
    output_shape: tuple[int, ...] = ()
    output_kind: str = ""  # "logits" | "probabilities" | "log-probabilities"
    output_finite: bool = True
    forward_errors: dict[str, str] = field(default_factory=dict)
    activations: tuple[str, ...] = ()  # what joins each pair of Linear layers the forward pass calls
    linears_run: tuple[str, ...] | None = None  # Linear layers the forward pass calls, in order; None: unseen
    functional_ops: tuple[str, ...] = ()  # torch functions and tensor methods forward calls
    unrebuildable: str = ""  # why the grader cannot rebuild, and so not train, the model
    probe_mismatch: str = ""  # how the model's own forward differed from its rebuild
    activation_bytes: int = 0
    # regression: the function after the last nn.Linear ("identity": none), the last torch.nn module when its
    # output is the model's output, the output's range on extreme inputs, and whether it stays bounded there
    output_activation: str | None = None
    last_module: str = ""
    output_range: tuple[float, float] | None = None
    bounded_output: bool | None = None
    # each torch.nn layer and layer-like function the forward pass calls, in order, with its output's shape
    # for one sample, on the input style the grader detected (empty when the model did not run)
    feature_maps: tuple[FeatureMap, ...] = ()
    input_shape: tuple[int, ...] = ()  # one sample, as the grader feeds it
    task: str = "classification"
    graph: ModelGraph | None = field(default=None, compare=False, repr=False)

    @property
    def linear_layers(self) -> list[Layer]:
        """The Linear layers of the network: those the forward pass calls, in order (each once); the ones
        defined, when the forward pass could not be traced."""
        defined = [layer for layer in self.layers if layer.is_linear]
        if self.linears_run is None:
            return defined
        by_name = {layer.name: layer for layer in defined}
        return [by_name[name] for name in dict.fromkeys(self.linears_run) if name in by_name]

    @property
    def unused_linear_layers(self) -> list[Layer]:
        running = {layer.name for layer in self.linear_layers}
        return [layer for layer in self.layers if layer.is_linear and layer.name not in running]

    @property
    def trainable(self) -> bool:
        return self.is_module and not self.unrebuildable and self.input_style is not None

    def style_text(self) -> str:
        """What the grader detected, in words a student recognises."""
        parts = []
        if self.input_style == "image":
            parts.append("takes images of shape (B, 1, 28, 28)")
        elif self.input_style == "flat":
            parts.append("takes flat inputs of shape (B, 784)")
        elif self.input_style == "features":
            parts.append("takes a batch of feature rows")
        kind = {"probability": "a probability (its output stays within [0, 1]): trained with binary "
                               "cross-entropy on it",
                "logit": "a logit (no sigmoid on its output): trained with binary cross-entropy with logits"
                }.get(self.output_kind, self.output_kind) if self.task == "binary" else self.output_kind
        if self.tuple_length:
            parts.append(f"returns a tuple of {self.tuple_length}; the grader trains on element "
                         f"{self.tuple_index} ({kind or 'the output'})")
        elif kind:
            parts.append(f"returns {kind}")
        return ", ".join(parts)


def not_a_module(answer: dict) -> ModelDescription:
    if answer.get("refused"):
        planned = answer.get("planned_params")
        return ModelDescription(is_module=False, refused_params=planned if isinstance(planned, int) else 0)
    return ModelDescription(is_module=False, type_name=str(answer.get("type", ""))[:100])


def describe(graph: ModelGraph, analysis: Analysis, *, task: str) -> ModelDescription:
    nodes = graph.nodes or ()
    linear_nodes = [n for n in nodes if n.op == "call_module" and _standard(graph, n.target) == "Linear"]
    return ModelDescription(
        is_module=True, task=task, class_name=graph.class_name, layers=_layers(graph),
        total_params=graph.total_params, trainable_params=graph.trainable_params,
        buffer_values_read=graph.buffer_values_read,
        input_style=analysis.input_style, tuple_index=analysis.tuple_index, tuple_length=analysis.tuple_length,
        output_shape=analysis.output_shape, output_kind=analysis.output_kind, output_finite=analysis.output_finite,
        forward_errors=analysis.forward_errors or _child_errors(graph),
        activations=tuple(_between(graph, a, b) for a, b in pairwise(linear_nodes)),
        linears_run=tuple(n.target for n in linear_nodes) if graph.nodes is not None else None,
        functional_ops=tuple(dict.fromkeys(n.target for n in nodes if n.op in ("call_function", "call_method"))),
        unrebuildable=graph.unrebuildable, probe_mismatch=analysis.probe_mismatch,
        activation_bytes=analysis.activation_bytes,
        output_activation=_head(graph, linear_nodes[-1], analysis.tuple_index) if linear_nodes else None,
        last_module=_last_module(graph, analysis.tuple_index),
        output_range=analysis.output_range, bounded_output=analysis.bounded_output,
        feature_maps=_feature_maps(graph, analysis.node_shapes), input_shape=_input_shape(graph, analysis.node_shapes),
        graph=graph)


def _input_shape(graph: ModelGraph, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    placeholder = next((node for node in graph.nodes or () if node.op == "placeholder"), None)
    return shapes.get(placeholder.name, ()) if placeholder is not None else ()


def _feature_maps(graph: ModelGraph, shapes: dict[str, tuple[int, ...]]) -> tuple[FeatureMap, ...]:
    maps = []
    for node in graph.nodes or ():
        if node.name not in shapes:
            continue
        if node.op == "call_module":
            module = graph.module(node.target)
            if module is not None:
                maps.append(FeatureMap(name=node.target or module.class_name, kind=_module_text(module),
                                       shape=shapes[node.name], params=module.params))
        elif node.op in ("call_function", "call_method") and node.target in LAYER_FUNCTIONS:
            kind = node.target if node.op == "call_function" else f".{node.target}()"
            maps.append(FeatureMap(name=node.name, kind=kind, shape=shapes[node.name]))
    return tuple(maps)


def _module_text(module) -> str:
    """A standard layer with the settings that decide its output's shape."""
    config, name = module.config, module.standard

    def size(value) -> str:
        return "×".join(map(str, value)) if isinstance(value, tuple) and len(set(value)) > 1 else \
            str(value[0] if isinstance(value, tuple) else value)

    if name == "Linear":
        return f"Linear({config['in_features']} → {config['out_features']})"
    if name == "Conv2d":
        extra = "".join(f", {key} {size(config[key])}" for key, default in (("stride", 1), ("padding", 0))
                        if size(config[key]) != str(default))
        return (f"Conv2d({config['in_channels']} → {config['out_channels']}, kernel "
                f"{size(config['kernel_size'])}{extra})")
    if name in ("MaxPool2d", "AvgPool2d"):
        return f"{name}({size(config['kernel_size'])})"
    return name


def _layers(graph: ModelGraph) -> tuple[Layer, ...]:
    layers = []
    for module in graph.modules:
        if module.has_children and not module.params:
            continue  # a container: its layers are listed themselves
        if module.standard:
            layers.append(Layer(name=module.path or module.class_name, type=module.standard, module="torch.nn",
                                params=module.params, in_features=_int(module.config.get("in_features")),
                                out_features=_int(module.config.get("out_features"))))
        else:
            base = f", a subclass of nn.{module.torch_base}" if module.torch_base else ""
            layers.append(Layer(name=module.path or module.class_name,
                                type=f"{module.class_name} (custom layer{base})", module="notebook",
                                params=module.params))
    return tuple(layers)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _standard(graph: ModelGraph, path: str) -> str:
    module = graph.module(path)
    return module.standard if module else ""


def _kind(graph: ModelGraph, node: Node) -> str:
    """What a node does: its torch.nn class, function or method name."""
    return _standard(graph, node.target) if node.op == "call_module" else node.target


def _chain(graph: ModelGraph, start: NodeRef | None, stop: str) -> list[str] | None:
    """The kinds of the nodes from `start` back to the node named `stop`, following single inputs;
    None when the path forks, or reaches the input or another layer first."""
    by_name = {n.name: n for n in graph.nodes or ()}
    sizes = _size_nodes(graph)
    kinds: list[str] = []
    current = start
    while isinstance(current, NodeRef):
        if current.name == stop:
            return kinds
        node = by_name[current.name]
        inputs = [a for a in _refs(node.args) if a.name not in sizes]
        if node.op in ("placeholder", "get_attr") or len(inputs) != 1 or node.op == "output":
            return None
        kinds.append(_kind(graph, node))
        current = inputs[0]
    return None


def _refs(value) -> list[NodeRef]:
    if isinstance(value, NodeRef):
        return [value]
    if isinstance(value, (tuple, list)):
        return [r for v in value for r in _refs(v)]
    return []


def _size_nodes(graph: ModelGraph) -> set[str]:
    """Nodes that compute sizes (x.size(0), x.shape[1] * 2), not tensors: view's arguments, not its input."""
    sizes: set[str] = set()
    for node in graph.nodes or ():
        refs = _refs(node.args)
        if (node.op == "call_method" and node.target == "size") or node.target == "builtins.getattr" or (
                node.op == "call_function" and node.target.startswith("operator.") and refs
                and all(r.name in sizes for r in refs)):
            sizes.add(node.name)
    return sizes


def _named(kinds: list[str] | None) -> str:
    if kinds is None:
        return "other"
    real = [k for k in kinds if k not in ops.PASS_THROUGH]
    if not real:
        return "identity"
    names = {_ACTIVATION_OF.get(k, "other") for k in real}
    return names.pop() if len(names) == 1 and len(real) == 1 else "other"


def _between(graph: ModelGraph, first: Node, second: Node) -> str:
    start = second.args[0] if isinstance(second.args, tuple) and second.args else None
    return _named(_chain(graph, start, first.name))


def _output_ref(graph: ModelGraph, index: int | None) -> NodeRef | None:
    if not graph.nodes:
        return None
    output = graph.nodes[-1]
    value = output.args[0] if isinstance(output.args, tuple) and output.args else None
    if index is not None and isinstance(value, tuple) and index < len(value):
        value = value[index]
    return value if isinstance(value, NodeRef) else None


def _head(graph: ModelGraph, last_linear: Node, index: int | None) -> str:
    return _named(_chain(graph, _output_ref(graph, index), last_linear.name))


def _last_module(graph: ModelGraph, index: int | None) -> str:
    ref = _output_ref(graph, index)
    node = next((n for n in graph.nodes or () if isinstance(ref, NodeRef) and n.name == ref.name), None)
    return _standard(graph, node.target) if node is not None and node.op == "call_module" else ""


def _child_errors(graph: ModelGraph) -> dict[str, str]:
    return {style: probe.error for style, probe in graph.probes.items() if probe.error}
