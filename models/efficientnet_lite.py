"""EfficientNet-Lite as a backend-agnostic Keras 3 functional model, and the loader that fills it
from a state dict in EfficientNet-PyTorch naming (`_conv_stem`, `_blocks.N._expand_conv`, ...).

Lite is EfficientNet-B0's block layout without squeeze-excitation, with ReLU6, batch-norm eps 1e-3,
a stem fixed at 32 channels and a head fixed at 1,280, and the first and last stages never
repeated; Lite1 and Lite2 scale the rest by width and depth. The backbone is frozen, so each batch
norm is folded into the convolution before it: the same function, about 20% faster on this
CPU (Lite0, batches of 32 and 64, TensorFlow backend).

>>> [(b.index, b.in_channels, b.out_channels, b.kernel, b.stride) for b in lite_blocks(1.0, 1.0)][:3]
[(0, 32, 16, 3, 1), (1, 16, 24, 3, 2), (2, 24, 24, 3, 1)]
>>> len(lite_blocks(1.0, 1.1)), lite_blocks(1.1, 1.2)[-1].out_channels
(21, 352)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import keras
import numpy as np

# EfficientNet-B0's seven stages: (repeats, kernel, stride of the first block, expansion, out channels).
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32     # Lite keeps stem and head at B0's size whatever the width multiplier
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


class ArchitectureMismatch(ValueError):
    """The weights do not fit the architecture (a missing, extra or mis-shaped parameter)."""


@dataclass(frozen=True)
class Block:
    """One MBConv block: 1x1 expand (unless expansion is 1), depthwise, 1x1 project."""
    index: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expansion: int

    @property
    def expanded_channels(self) -> int:
        return self.in_channels * self.expansion

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """The reference `round_filters`: scale, round to a multiple of 8, never lose over 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_blocks(width: float, depth: float) -> list[Block]:
    """Every block of EfficientNet-Lite at these multipliers, in order."""
    blocks, in_channels = [], STEM_CHANNELS
    for stage, (repeats, kernel, stride, expansion, out) in enumerate(B0_STAGES):
        if 0 < stage < len(B0_STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        out = round_channels(out, width)
        for i in range(repeats):
            blocks.append(Block(len(blocks), in_channels, out, kernel, stride if i == 0 else 1, expansion))
            in_channels = out
    return blocks


def build_efficientnet_lite(width: float, depth: float, image_size: int, num_classes: int = 1000,
                            name: str = "efficientnet_lite") -> keras.Model:
    """A model with two outputs: the 1,280-d pooled features and the ImageNet logits.
    Input: (N, image_size, image_size, 3) float32, already scaled as (x - 127) / 128.
    Layer names carry no dots (the torch backend refuses them); `torch_name` maps them back."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # "same" padding is TensorFlow's (pad more at the bottom/right), which the reference also uses.
    x = _relu6(keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", name="_conv_stem")(inputs),
               "_conv_stem_relu")
    features = _blocks_and_head(x, lite_blocks(width, depth))
    logits = keras.layers.Dense(num_classes, name="_fc")(features)
    return keras.Model(inputs, [features, logits], name=name)


def build_top(width: float, depth: float, input_shape: tuple, start_block: int,
              name: str = "efficientnet_lite_top") -> keras.Model:
    """The network from block `start_block` on, up to the pooled features: input is what enters
    that block (see `block_input`), output the 1,280-d features. Its layers are named as in the
    whole network, so weights copy across by name (what fine-tuning trains)."""
    blocks = lite_blocks(width, depth)
    if not 0 < start_block < len(blocks):
        raise ValueError(f"start_block must be 1..{len(blocks) - 1}, got {start_block}")
    inputs = keras.Input(tuple(input_shape), name="activations")
    return keras.Model(inputs, _blocks_and_head(inputs, blocks[start_block:]), name=name)


def block_input(model: keras.Model, start_block: int):
    """The tensor of a whole network that enters block `start_block` (the previous block's output)."""
    previous = f"blocks_{start_block - 1}_"
    names = [layer.name for layer in model.layers]
    return model.get_layer(previous + ("residual" if previous + "residual" in names else "project_conv")).output


def _relu6(x, name: str):
    """ReLU6, named after the convolution it follows: every layer of the network has a fixed name,
    never one of Keras' per-thread counters ("re_lu_7"), so a network built on one thread and a
    top built on another (fine-tuning's worker) cannot disagree or collide on names."""
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def _blocks_and_head(x, blocks: list[Block]):
    for block in blocks:
        prefix = f"blocks_{block.index}_"
        shortcut = x
        if block.expansion != 1:
            x = _relu6(keras.layers.Conv2D(block.expanded_channels, 1, name=prefix + "expand_conv")(x),
                       prefix + "expand_relu")
        x = _relu6(keras.layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding="same",
                                                name=prefix + "depthwise_conv")(x), prefix + "depthwise_relu")
        x = keras.layers.Conv2D(block.out_channels, 1, name=prefix + "project_conv")(x)
        if block.has_residual:
            x = keras.layers.Add(name=prefix + "residual")([x, shortcut])
    x = _relu6(keras.layers.Conv2D(HEAD_CHANNELS, 1, name="_conv_head")(x), "_conv_head_relu")
    return keras.layers.GlobalAveragePooling2D(name="features")(x)


def block_outputs(model: keras.Model, width: float, depth: float) -> list:
    """The output tensors of the last block of each stage of a model `build_efficientnet_lite`
    made (stage order), for features pooled from several depths."""
    blocks = lite_blocks(width, depth)
    last = [b for b, after in zip(blocks, blocks[1:] + [None])
            if after is None or after.stride != 1 or after.out_channels != b.out_channels]
    names = [f"blocks_{b.index}_" + ("residual" if b.has_residual else "project_conv") for b in last]
    return [model.get_layer(name).output for name in names]


def torch_name(layer_name: str) -> str:
    """The state-dict prefix of a Keras layer: 'blocks_3_expand_conv' -> '_blocks.3._expand_conv'."""
    if m := re.fullmatch(r"blocks_(\d+)_(\w+)", layer_name):
        return f"_blocks.{m.group(1)}._{m.group(2)}"
    return layer_name


# The batch norm after each convolution, as the state dict names it.
_BATCH_NORM_OF = {"_conv_stem": "_bn0", "_conv_head": "_bn1",
                  "_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2"}


def _batch_norm_of(conv: str) -> str:
    prefix, _, kind = conv.rpartition(".")
    return f"{prefix}.{_BATCH_NORM_OF[kind]}" if prefix else _BATCH_NORM_OF[conv]


def _keras_weights(layer, take) -> list[np.ndarray]:
    """The layer's weights in Keras layouts, taken from the state dict with `take(key)`."""
    name = torch_name(layer.name)
    if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
        bn = _batch_norm_of(name)
        gamma, beta, mean, var = (take(bn + s) for s in (".weight", ".bias", ".running_mean", ".running_var"))
        take(bn + ".num_batches_tracked")  # training bookkeeping, not used at inference
        scale = gamma / np.sqrt(var + BN_EPSILON)
        kernel = take(name + ".weight")
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = kernel.transpose(2, 3, 0, 1) * scale[:, None]   # (C,1,kh,kw) -> (kh,kw,C,1)
        else:
            kernel = kernel.transpose(2, 3, 1, 0) * scale            # (O,I,kh,kw) -> (kh,kw,I,O)
        return [kernel, beta - mean * scale]
    if isinstance(layer, keras.layers.Dense):
        return [take(name + ".weight").T, take(name + ".bias")]
    return []


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy every parameter into the model. Refuses a partial match: every model weight must be
    set, with the shape the layer wants, and every key of the state dict used exactly once."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ArchitectureMismatch(f"the weights have no '{key}' (architecture '{model.name}' needs it)")
        if key in used:
            raise ArchitectureMismatch(f"weight '{key}' would be used twice")
        used.add(key)
        return state[key]

    assigned = 0
    for layer in model.layers:
        weights = _keras_weights(layer, take)
        expected = [tuple(w.shape) for w in layer.weights]
        if [w.shape for w in weights] != expected:
            raise ArchitectureMismatch(f"layer '{layer.name}' wants shapes {expected}, the weights "
                                       f"give {[w.shape for w in weights]}")
        if weights:
            layer.set_weights([w.astype(np.float32) for w in weights])
            assigned += sum(w.size for w in weights)
    unused = sorted(set(state) - used)
    if unused:
        raise ArchitectureMismatch(f"{len(unused)} of the weights fit no layer of '{model.name}', "
                                   f"e.g. {unused[:5]}")
    if assigned != model.count_params():
        raise ArchitectureMismatch(f"{assigned} numbers were loaded into '{model.name}', "
                                   f"which has {model.count_params()}")
