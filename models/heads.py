"""The small Keras head trained on cached embeddings: a softmax classifier, optionally with one
hidden layer and dropout, with the scikit-learn contract (`fit`, `predict_proba`).

With few labels it also learns from the unlabeled pool (transductive; the caller passes the
pool's embeddings, never the hold-out's): labels are spread over a nearest-neighbour graph of the
labeled and unlabeled embeddings (label spreading, Zhou et al. 2004, scikit-learn's), and the
softmax trains on the labeled images and on the pool's spread labels, each drawn as often as its
spread confidence says. Optionally its probabilities are blended with class-mean (prototype)
probabilities on centered, L2-normalised features (SimpleShot, Wang et al. 2019) while labels
are few. Which of these is on, and how strongly, is chosen by `python -m loop benchmark-heads`.

Retraining after every batch must take well under a second on a CPU, and `model.fit` spends most
of that on per-epoch overhead. So `fit` runs a fixed number of class-balanced minibatch steps
inside ONE compiled call (TensorFlow: `tf.function` + XLA; JAX: `jax.jit` + `fori_loop`), with
shapes padded to power-of-two buckets so a growing label set does not recompile every time, and it
warm-starts from the previous version. Other backends (torch) fall back to `train_on_batch`.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

if TYPE_CHECKING:
    import scipy.sparse


class SoftmaxHead:
    """Softmax classifier over fixed embeddings.

    >>> import numpy as np
    >>> X = np.r_[np.zeros((5, 4)), np.ones((5, 4))].astype("float32"); y = np.r_[[0] * 5, [1] * 5]
    >>> head = SoftmaxHead(n_classes=2, cold_steps=60).fit(X, y)
    >>> head.predict_proba(X).argmax(1).tolist() == y.tolist()
    True
    """

    def __init__(self, n_classes: int, hidden_units: int = 0, dropout: float = 0.0,
                 learning_rate: float = 1e-3, weight_decay: float = 10.0, batch_size: int = 256,
                 cold_steps: int = 300, warm_steps: int = 100, class_balanced: bool = True,
                 seed: int = 0, spread_neighbors: int = 15, spread_alpha: float = 0.5,
                 spread_until: float = 20.0, spread_max_unlabeled: int = 3000,
                 spread_weight: float = 1.0, spread_power: float = 4.0,
                 prototype_weight: float = 0.0,
                 prototype_temperature: float = 10.0):
        if n_classes < 2:
            raise ValueError(f"a head needs at least 2 classes, got {n_classes}")
        if spread_neighbors < 0 or not 0 < spread_alpha < 1 or spread_max_unlabeled < 1:
            raise ValueError("spread_neighbors must be 0 (off) or more, spread_alpha lie in (0, 1) "
                             "and spread_max_unlabeled be 1 or more")
        if spread_weight < 0 or spread_power < 0 or prototype_weight < 0 or prototype_temperature <= 0:
            raise ValueError("spread_weight, spread_power and prototype_weight must be 0 or more, "
                             "prototype_temperature more than 0")
        self.n_classes = n_classes
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.cold_steps = cold_steps
        self.warm_steps = warm_steps
        self.class_balanced = class_balanced
        self.seed = seed
        # Label spreading over the pool: k neighbours (0: off), its clamping alpha, while labels
        # per class are at most `spread_until`, over at most this many unlabeled images (drawn
        # with the seed); a spread label weighs `spread_weight` x its confidence to the power
        # `spread_power` (unsure ones count for little), a label 1.
        self.spread_neighbors = spread_neighbors
        self.spread_alpha = spread_alpha
        self.spread_until = spread_until
        self.spread_max_unlabeled = spread_max_unlabeled
        self.spread_weight = spread_weight
        self.spread_power = spread_power
        # Prototype blend: weight m / (m + labels per class) on the class-mean probabilities.
        self.prototype_weight = prototype_weight
        self.prototype_temperature = prototype_temperature

    # -- the scikit-learn contract ------------------------------------------------------------

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in (
            "n_classes", "hidden_units", "dropout", "learning_rate", "weight_decay", "batch_size",
            "cold_steps", "warm_steps", "class_balanced", "seed", "spread_neighbors",
            "spread_alpha", "spread_until", "spread_max_unlabeled", "spread_weight", "spread_power",
            "prototype_weight", "prototype_temperature")}

    def fit(self, X: np.ndarray, y: np.ndarray, warm_start: SoftmaxHead | None = None,
            unlabeled: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> SoftmaxHead:
        """Train on embeddings `X` (n, d) and class indices `y` (n,).

        With `warm_start` (a fitted head of the same shape) training starts from its weights and
        takes `warm_steps` instead of `cold_steps`. `unlabeled` (m, d): embeddings of the pool's
        unlabeled images, used when spreading is on and labels are few. `sample_weight` (n,):
        how often each row is drawn relative to the others of its class (default all 1).
        """
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise ValueError(f"fit needs X of shape (n, d) and y of shape (n,), got {X.shape} and {y.shape}")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, got {y.min()}..{y.max()}")
        weights = (np.ones(len(y)) if sample_weight is None
                   else np.asarray(sample_weight, dtype=np.float64))
        if weights.shape != y.shape or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise ValueError("sample_weight must be (n,) finite and non-negative")
        self.n_train_ = len(y)
        self.n_spread_ = 0
        self.prototypes_ = None
        if self.prototype_weight > 0:
            self.center_, self.prototypes_ = prototypes(X, y, self.n_classes, unlabeled)
        if self.spreads(y, unlabeled):
            U = _draw_rows(np.asarray(unlabeled, dtype=np.float32), self.spread_max_unlabeled,
                           np.random.default_rng([self.seed, 7]))
            spread, confidence = spread_labels(X, y, U, self.n_classes, self.spread_neighbors,
                                               self.spread_alpha)
            keep = confidence > 0
            X = np.concatenate([X, U[keep]])
            y = np.concatenate([y, spread[keep]])
            weights = np.concatenate([weights, self.spread_weight * confidence[keep] ** self.spread_power])
            self.n_spread_ = int(keep.sum())
        warm = warm_start is not None and warm_start.compatible_with(self, X.shape[1])
        # Scaling is learned afresh from every training set (early sets are tiny and noisy); a
        # warm start carries the previous function over exactly, re-expressed in the new scaling.
        self.feature_mean_, self.feature_scale_ = feature_scaling(X)
        workspace = _workspace(self, X.shape[1])
        start = (rescale_first_layer(warm_start.model_.get_weights(), warm_start.feature_mean_,
                                     warm_start.feature_scale_, self.feature_mean_, self.feature_scale_)
                 if warm else _initial_weights(workspace.model, self.seed))
        chunk = max(1, min(self.warm_steps, self.cold_steps))
        steps = -(-(self.warm_steps if warm else self.cold_steps) // chunk) * chunk
        rng = np.random.default_rng([self.seed, len(y)])
        batches = balanced_batches(y, steps, min(self.batch_size, _bucket(len(y))), self.n_classes,
                                   rng, self.class_balanced, weights)
        self.model_ = self._build(X.shape[1])
        self.model_.set_weights(workspace.train(start, self._scale(X), y, batches))
        return self

    def wants_unlabeled(self, y: np.ndarray) -> bool:
        """Whether a fit on labels `y` would use the pool's unlabeled embeddings (so a caller
        reads them only then): spreading is on and labels per class are at most spread_until."""
        y = np.asarray(y)
        return bool(self.spread_neighbors and len(y)
                    and len(y) / len(np.unique(y)) <= self.spread_until)

    def spreads(self, y: np.ndarray, unlabeled: np.ndarray | None) -> bool:
        """Whether a fit on labels `y` with these unlabeled rows spreads labels over them."""
        return unlabeled is not None and len(unlabeled) > 0 and self.wants_unlabeled(y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raw = np.asarray(X, dtype=np.float32)
        X = self._scale(raw)
        out = [ops.convert_to_numpy(ops.softmax(self.model_(X[i:i + 8192], training=False), axis=-1))
               for i in range(0, len(X), 8192)]
        probs = np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)
        if getattr(self, "prototypes_", None) is not None and len(probs):
            share = self.prototype_weight / (self.prototype_weight + self.n_train_ / self.n_classes)
            near = prototype_probabilities(raw, self.center_, self.prototypes_,
                                           self.prototype_temperature)
            probs = (share * near + (1 - share) * probs).astype(np.float32)
        return probs

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    # -- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write config, scaling and weights to one `.npz` file (no pickles, any backend reads it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"w{i}": w for i, w in enumerate(self.model_.get_weights())}
        tmp = path.with_name(path.name + ".tmp.npz")
        if getattr(self, "prototypes_", None) is not None:
            arrays.update(center=self.center_, prototypes=self.prototypes_)
        np.savez(tmp, config=np.array(json.dumps(self.get_config())), mean=self.feature_mean_,
                 scale=self.feature_scale_, n_train=np.array(getattr(self, "n_train_", 0)),
                 n_spread=np.array(getattr(self, "n_spread_", 0)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SoftmaxHead:
        with np.load(path, allow_pickle=False) as f:
            head = cls(**json.loads(str(f["config"])))
            head.feature_mean_, head.feature_scale_ = f["mean"], f["scale"]
            weights = [f[f"w{i}"] for i in range(sum(k.startswith("w") for k in f.files))]
            head.n_train_ = int(f["n_train"]) if "n_train" in f.files else 0
            head.n_spread_ = int(f["n_spread"]) if "n_spread" in f.files else 0
            head.center_ = f["center"] if "center" in f.files else None
            head.prototypes_ = f["prototypes"] if "prototypes" in f.files else None
        head.model_ = head._build(len(head.feature_mean_))
        head.model_.set_weights(weights)
        return head

    # -- internals ------------------------------------------------------------------------------

    def compatible_with(self, other: SoftmaxHead, n_features: int) -> bool:
        return (hasattr(self, "model_") and self.n_classes == other.n_classes
                and self.hidden_units == other.hidden_units and len(self.feature_mean_) == n_features)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (X - self.feature_mean_) / self.feature_scale_

    def _build(self, n_features: int) -> keras.Model:
        inputs = keras.Input((n_features,))
        x = inputs
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, seed=self.seed)(x)
        if self.hidden_units:
            x = keras.layers.Dense(self.hidden_units, activation="relu",
                                   kernel_initializer=keras.initializers.HeNormal(seed=self.seed))(x)
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, seed=self.seed + 1)(x)
        # Zero-initialised logits: a cold head starts at the uniform prediction, not a random one.
        logits = keras.layers.Dense(self.n_classes, kernel_initializer="zeros")(x)
        return keras.Model(inputs, logits)


def feature_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean, and one scale shared by all features (the overall spread around that
    mean). A per-feature scale, estimated from a handful of labels, inflates the noise of
    near-constant features; one shared scale does not (measured: +1 to +2 points at 20-100 labels).
    """
    mean = X.mean(axis=0)
    scale = float(np.sqrt(np.mean((X - mean) ** 2))) + 1e-6
    return mean.astype(np.float32), np.full(X.shape[1], scale, np.float32)


def rescale_first_layer(weights: list[np.ndarray], old_mean: np.ndarray, old_scale: np.ndarray,
                        new_mean: np.ndarray, new_scale: np.ndarray) -> list[np.ndarray]:
    """The same function of the raw features, for inputs scaled with (new_mean, new_scale)
    instead of (old_mean, old_scale): only the first layer's kernel and bias change.

    >>> rng = np.random.default_rng(0); x = rng.normal(size=(3, 4)); W, b = rng.normal(size=(4, 2)), np.ones(2)
    >>> m0, s0, m1, s1 = np.zeros(4), np.ones(4), np.full(4, 0.5), np.full(4, 2.0)
    >>> W1, b1 = rescale_first_layer([W, b], m0, s0, m1, s1)
    >>> bool(np.allclose((x - m0) / s0 @ W + b, (x - m1) / s1 @ W1 + b1))
    True
    """
    kernel, bias, *rest = weights
    new_kernel = kernel * (new_scale / old_scale)[:, None]
    new_bias = bias + ((new_mean - old_mean) / old_scale) @ kernel
    return [new_kernel.astype(np.float32), new_bias.astype(np.float32), *rest]


def balanced_batches(y: np.ndarray, steps: int, batch_size: int, n_classes: int,
                     rng: np.random.Generator, class_balanced: bool = True,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """(steps, batch_size) row indices into `y`, drawn with replacement; with `class_balanced`,
    each present class is drawn equally often, so a rare class weighs as much as a common one.
    `weights`: within a class (or overall), rows are drawn in proportion to them.

    >>> y = np.array([0] * 98 + [1] * 2)
    >>> b = balanced_batches(y, 50, 64, 2, np.random.default_rng(0))
    >>> bool(0.4 < (y[b] == 1).mean() < 0.6)
    True
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if class_balanced:
        mass = np.bincount(y, weights=w, minlength=n_classes)
        p = np.divide(w, mass[y], out=np.zeros(len(y)), where=mass[y] > 0)
    else:
        p = w.copy()
    if weights is None and not class_balanced:
        p = None
    else:
        p /= p.sum()
    return rng.choice(len(y), size=(steps, batch_size), replace=True, p=p)


def _unit(Z: np.ndarray) -> np.ndarray:
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def prototypes(X: np.ndarray, y: np.ndarray, n_classes: int,
               unlabeled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(center, class means): the features' mean (over labeled and unlabeled rows), and each
    class's mean of the centered, L2-normalised features, normalised again (zero for a class
    with no labels)."""
    rows = X if unlabeled is None or not len(unlabeled) else np.concatenate([X, unlabeled])
    center = rows.mean(axis=0).astype(np.float32)
    Z = _unit(X - center)
    means = np.zeros((n_classes, X.shape[1]), np.float32)
    for c in np.unique(y):
        means[c] = Z[y == c].mean(axis=0)
    return center, _unit(means).astype(np.float32)


def prototype_probabilities(X: np.ndarray, center: np.ndarray, means: np.ndarray,
                            temperature: float) -> np.ndarray:
    """Softmax over classes of temperature x the cosine between a centered row and each class
    mean (a class without labels gets probability 0)."""
    logits = temperature * (_unit(X - center) @ means.T)
    logits[:, ~means.any(axis=1)] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def spread_labels(X: np.ndarray, y: np.ndarray, U: np.ndarray, n_classes: int, neighbors: int,
                  alpha: float, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Labels spread from (X, y) to the unlabeled rows U over a k-nearest-neighbour graph of the
    centered, L2-normalised rows (scikit-learn's LabelSpreading): (class, confidence) per row of
    U, confidence in 0..1 = how far its spread distribution is above uniform (0: reached by no
    label, or a tie of all classes)."""
    from sklearn.semi_supervised import LabelSpreading

    rows = np.concatenate([X, U])
    Z = _unit(rows - rows.mean(axis=0))
    labels = np.r_[y, np.full(len(U), -1)]
    # scikit-learn numbers classes by the labels it sees; map back to ours.
    nearest = max(1, min(neighbors, len(Z) - 1))
    model = LabelSpreading(kernel=lambda A, B: knn_graph(A, B, nearest), alpha=alpha, max_iter=iterations)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence after `iterations` is not needed
        model.fit(Z, labels)
    dist = np.nan_to_num(model.label_distributions_[len(X):])
    seen = model.classes_[model.classes_ >= 0]
    best = dist.argmax(axis=1)
    k = len(seen)
    confidence = np.clip((dist.max(axis=1) * k - 1) / max(k - 1, 1), 0, 1)
    confidence[dist.sum(axis=1) <= 0] = 0
    return seen[best].astype(np.int64), confidence


def knn_graph(A: np.ndarray, B: np.ndarray, k: int) -> scipy.sparse.csr_matrix:
    """The k-nearest-neighbour connectivity graph from the unit rows of A to those of B (each
    row's k most similar rows of B, itself included when B is A): the graph scikit-learn's
    kernel="knn" builds, the same matrix, from one float32 matrix product instead of its
    neighbour search (that search was 0.50 s of a 0.55 s spreading fit at 3,100 rows of
    1,280-d; on the 1,600-image demo pool the whole fit went from 0.16 to 0.065 s).

    >>> knn_graph(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 1).toarray()
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    import scipy.sparse

    similarity = np.asarray(A, np.float32) @ np.asarray(B, np.float32).T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    rows = len(A)
    return scipy.sparse.csr_matrix((np.ones(rows * k), nearest.ravel(), np.arange(0, rows * k + 1, k)),
                                   shape=(rows, len(B)))


def _draw_rows(U: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` rows of U, drawn at random (in their order), all of them if fewer."""
    if len(U) <= limit:
        return U
    return U[np.sort(rng.choice(len(U), limit, replace=False))]


def _bucket(n: int) -> int:
    """The power of two (at least 64) at or above n: padded sizes keep compiled shapes few."""
    return max(64, 1 << (int(n) - 1).bit_length())


class _Workspace:
    """A model, optimizer and compiled training loop for one head architecture, built once per
    process and reused by every fit (compiling costs about a second; a fit must not)."""

    def __init__(self, head: SoftmaxHead, n_features: int):
        self.lock = threading.Lock()
        self.chunk_steps = max(1, min(head.warm_steps, head.cold_steps))
        self.model = head._build(n_features)
        self.optimizer = keras.optimizers.AdamW(learning_rate=head.learning_rate,
                                                weight_decay=head.weight_decay)
        self.optimizer.exclude_from_weight_decay(var_names=["bias"])
        self.optimizer.build(self.model.trainable_variables)
        # Restored before every fit, so a fit depends on its inputs alone, not on earlier fits.
        # (The optimizer's variables include its learning rate: restore, never zero them.)
        self.initial_state = [ops.convert_to_numpy(v.value) for v in
                              self.model.non_trainable_variables + self.optimizer.variables]
        backend = keras.backend.backend()
        self.run = {"tensorflow": _compile_tensorflow, "jax": _compile_jax}.get(
            backend, _compile_stepwise)(self.model, self.optimizer)

    def train(self, weights: list[np.ndarray], X: np.ndarray, y: np.ndarray,
              batches: np.ndarray) -> list[np.ndarray]:
        padded = _bucket(len(X))
        Xp = np.zeros((padded, X.shape[1]), np.float32)
        Xp[:len(X)] = X
        yp = np.zeros(padded, np.int32)
        yp[:len(y)] = y
        batches = batches.astype(np.int32)
        with self.lock:
            self.model.set_weights(weights)
            for variable, value in zip(self.model.non_trainable_variables + self.optimizer.variables,
                                       self.initial_state):
                variable.assign(value)
            # Run in chunks of one fixed length, so cold and warm fits share one compiled loop.
            for start in range(0, len(batches), self.chunk_steps):
                self.run(Xp, yp, batches[start:start + self.chunk_steps])
            return [np.array(w) for w in self.model.get_weights()]


_workspaces: dict[tuple, _Workspace] = {}
_workspaces_lock = threading.Lock()


def _workspace(head: SoftmaxHead, n_features: int) -> _Workspace:
    key = (keras.backend.backend(), n_features, head.n_classes, head.hidden_units, head.dropout,
           head.learning_rate, head.weight_decay, head.seed, min(head.warm_steps, head.cold_steps))
    with _workspaces_lock:
        if key not in _workspaces:
            _workspaces[key] = _Workspace(head, n_features)
        return _workspaces[key]


def _initial_weights(model: keras.Model, seed: int) -> list[np.ndarray]:
    """Cold-start weights drawn from `seed` alone: He-normal hidden kernels, zero output kernel
    (a cold head starts at the uniform prediction), zero biases."""
    rng = np.random.default_rng(seed)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    weights = []
    for i, layer in enumerate(dense):
        fan_in, fan_out = layer.kernel.shape
        last = i == len(dense) - 1
        weights.append(np.zeros((fan_in, fan_out), np.float32) if last else
                       rng.normal(0, np.sqrt(2 / fan_in), (fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, np.float32))
    return weights


def _loss(y, logits):
    return ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def _compile_tensorflow(model, optimizer):
    import tensorflow as tf

    variables = model.trainable_variables

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run(X, y, batches):
        def step(i):
            rows = batches[i]
            with tf.GradientTape() as tape:
                loss = _loss(tf.gather(y, rows), model(tf.gather(X, rows), training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return (i + 1,)
        tf.while_loop(lambda i: i < tf.shape(batches)[0], step, (tf.constant(0),))

    return lambda X, y, batches: run(tf.constant(X), tf.constant(y), tf.constant(batches))


def _compile_jax(model, optimizer):
    import jax

    def loss_fn(trainable, non_trainable, xb, yb):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        return _loss(yb, logits), non_trainable

    grad_fn = jax.grad(loss_fn, has_aux=True)

    @jax.jit
    def run(trainable, non_trainable, opt_vars, X, y, batches):
        def step(i, state):
            trainable, non_trainable, opt_vars = state
            rows = batches[i]
            grads, non_trainable = grad_fn(trainable, non_trainable, X[rows], y[rows])
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, non_trainable, opt_vars
        return jax.lax.fori_loop(0, batches.shape[0], step, (trainable, non_trainable, opt_vars))

    def train(X, y, batches):
        groups = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)
        state = run(*([v.value for v in group] for group in groups), X, y, batches)
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)

    return train


def _compile_stepwise(model, optimizer):
    """Any other backend (torch): one `train_on_batch` per step, a Python call each."""
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def train(X, y, batches):
        Xt, yt = ops.convert_to_tensor(X), ops.convert_to_tensor(y)
        for rows in batches:
            rows = ops.convert_to_tensor(rows)
            model.train_on_batch(ops.take(Xt, rows, axis=0), ops.take(yt, rows, axis=0))

    return train
