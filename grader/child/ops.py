"""The operations a student's model may be made of: the only ones the grader rebuilds.

The child names what it traced with these names (by the functions' identity,
captured before any student code runs); the grader accepts a traced graph only
when every node is one of them, and rebuilds it from standard torch. This file
is shared by both sides and imports torch only in `function_table`.
"""

# call_function targets, "owner.name" with owner torch, F (torch.nn.functional), operator or builtins
FUNCTIONS = (
    "torch.relu", "torch.sigmoid", "torch.tanh", "torch.softmax", "torch.log_softmax", "torch.flatten",
    "torch.reshape", "torch.squeeze", "torch.unsqueeze", "torch.argmax", "torch.cat", "torch.stack",
    "torch.add", "torch.sub", "torch.mul", "torch.div", "torch.matmul", "torch.clamp", "torch.exp",
    "torch.mean", "torch.sum", "torch.abs", "torch.square", "torch.sqrt", "torch.maximum", "torch.minimum",
    "torch.transpose", "torch.permute",
    "F.relu", "F.relu6", "F.leaky_relu", "F.elu", "F.selu", "F.gelu", "F.silu", "F.mish", "F.sigmoid", "F.tanh",
    "F.softmax", "F.log_softmax", "F.softplus", "F.hardtanh", "F.hardsigmoid", "F.hardswish", "F.dropout",
    "F.linear", "F.conv2d", "F.max_pool2d", "F.avg_pool2d", "F.adaptive_avg_pool2d", "F.layer_norm",
    "F.normalize",
    "operator.add", "operator.sub", "operator.mul", "operator.truediv", "operator.neg", "operator.pow",
    "operator.matmul", "operator.getitem", "operator.floordiv",
    "builtins.getattr",
)

# call_method targets: Tensor methods
METHODS = (
    "view", "reshape", "flatten", "size", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "argmax", "float",
    "squeeze", "unsqueeze", "contiguous", "permute", "transpose", "t", "mean", "sum", "clamp", "clamp_min",
    "exp", "abs", "matmul", "mul", "add", "sub", "div", "pow", "neg", "sqrt", "square", "view_as", "reshape_as",
    "expand", "expand_as", "detach", "clone",
)

# attributes a traced node may read with getattr (x.shape, x.ndim)
ATTRIBUTES = ("shape", "ndim", "T")

# call_module targets: torch.nn classes, each with the constructor arguments read from an instance
MODULES = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "AdaptiveAvgPool2d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
    "Dropout": ("p",),
    "Dropout2d": ("p",),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine", "bias"),
    "ReLU": (), "ReLU6": (), "SELU": (), "SiLU": (), "Mish": (), "Sigmoid": (), "Tanh": (), "Identity": (),
    "Hardsigmoid": (), "Hardswish": (),
    "LeakyReLU": ("negative_slope",),
    "ELU": ("alpha",),
    "GELU": ("approximate",),
    "Softplus": ("beta", "threshold"),
    "Hardtanh": ("min_val", "max_val"),
    "Softmax": ("dim",),
    "LogSoftmax": ("dim",),
    "PReLU": ("num_parameters",),
}
# constructor arguments that an instance holds as a parameter (or None) rather than a flag
FLAG_FROM_PARAMETER = ("bias",)

# what the grader's reports call the activation functions, by node (module class, function or method)
ACTIVATIONS = {
    "relu": ("ReLU", "torch.relu", "F.relu", "relu", "clamp_min"),
    "sigmoid": ("Sigmoid", "torch.sigmoid", "F.sigmoid", "sigmoid"),
    "tanh": ("Tanh", "torch.tanh", "F.tanh", "tanh"),
    "softmax": ("Softmax", "torch.softmax", "F.softmax", "softmax"),
    "log-softmax": ("LogSoftmax", "torch.log_softmax", "F.log_softmax", "log_softmax"),
    "relu6": ("ReLU6", "F.relu6"), "leaky-relu": ("LeakyReLU", "F.leaky_relu"), "elu": ("ELU", "F.elu"),
    "selu": ("SELU", "F.selu"), "gelu": ("GELU", "F.gelu"), "silu": ("SiLU", "F.silu"), "mish": ("Mish", "F.mish"),
    "softplus": ("Softplus", "F.softplus"), "hardtanh": ("Hardtanh", "F.hardtanh"),
    "hardsigmoid": ("Hardsigmoid", "F.hardsigmoid"), "hardswish": ("Hardswish", "F.hardswish"),
    "prelu": ("PReLU",), "exp": ("torch.exp", "exp"), "clamp": ("torch.clamp", "clamp"),
}
# nodes that only reshape, copy or (in evaluation) pass their input on
PASS_THROUGH = ("Flatten", "Dropout", "Dropout2d", "Identity", "torch.flatten", "torch.reshape", "torch.squeeze",
                "torch.unsqueeze", "F.dropout", "view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous",
                "float", "view_as", "reshape_as", "detach", "clone")


def function_table():
    """name -> the function itself (imports torch)."""
    import builtins
    import operator

    import torch
    import torch.nn.functional as F

    owners = {"torch": torch, "F": F, "operator": operator, "builtins": builtins}
    return {name: getattr(owners[name.split(".", 1)[0]], name.split(".", 1)[1]) for name in FUNCTIONS}
