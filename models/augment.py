"""Augmented views of images for the head: flip, small rotation, zoom and contrast, drawn by
Keras 3's own preprocessing layers (backend-agnostic, seeded) rather than written by hand.

A view is an image the backbone embeds like any other; the head trains on the views of each
labeled image beside the image itself. Off by default: see bench/README.md for what it does.

>>> import numpy as np
>>> batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
>>> views = augmented_views(batch, views=3, seed=0)
>>> views.shape, views.dtype.name, bool((views[0] == augmented_views(batch, 3, seed=0)[0]).all())
((3, 2, 32, 32, 3), 'uint8', True)
"""

from __future__ import annotations

import numpy as np

# Mild on purpose: a view must stay an image of its class (no crops that lose the object).
ROTATION = 0.03       # fraction of a full turn: about +-11 degrees
ZOOM = 0.1            # +-10%
CONTRAST = 0.2        # contrast scaled by 0.8..1.2


def pipeline(seed: int):
    """The augmentation layers, seeded (the same seed draws the same sequence of views)."""
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(ROTATION, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomZoom(ZOOM, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomContrast(CONTRAST, value_range=(0, 255), seed=seed + 3),
    ], name=f"augment_{seed}")


def augmented_views(batch: np.ndarray, views: int, seed: int = 0) -> np.ndarray:
    """(views, N, S, S, 3) uint8: `views` random views of each image of a (N, S, S, 3) uint8
    batch, view v drawn with seed `seed` + 10 v."""
    import keras

    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"augmented_views takes (N, S, S, 3) uint8 images, got {batch.shape} {batch.dtype}")
    out = np.empty((views, *batch.shape), np.uint8)
    floats = batch.astype(np.float32)
    for v in range(views):
        view = keras.ops.convert_to_numpy(pipeline(seed + 10 * v)(floats, training=True))
        out[v] = np.clip(np.rint(view), 0, 255).astype(np.uint8)
    return out


def view_embedder(embed, views: int):
    """For `embed_files`: a (N, S, S, 3) uint8 -> (N, views x D) function giving the embeddings
    of `views` views of each image (view v as `augmented_views(batch, 1, seed=v)`), so each file
    is decoded once for all its views."""
    def run(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([embed(augmented_views(batch, 1, seed=v)[0]) for v in range(views)], axis=1)
    return run
