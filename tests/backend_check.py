"""The figures one Keras backend gives on the demo set, for tests/test_backends.py to compare
across backends: `python -m tests.backend_check OUT_DIR` under KERAS_BACKEND=tensorflow, jax or
torch writes OUT_DIR/embeddings.npy (64 demo images embedded from their files) and
OUT_DIR/figures.json (the head's hold-out accuracy, a short replay's curve, and whether the
fine-tuned network composes and trains there).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.conftest import SHARED_DATA

N_EMBEDDED = 64
LABELS_PER_CLASS = 20
REPLAY_BUDGET = 30


def main(out: Path) -> None:
    import keras

    from loop.project import Paths, open_or_create_dataset_project
    from loop.replay import replay
    from models.backbones import load_backbone
    from models.extract import embed_files
    from models.images import load_image

    out.mkdir(parents=True, exist_ok=True)
    shared_cache = SHARED_DATA / "cache" / "embeddings"
    project = open_or_create_dataset_project("demo", Paths(out / "demo", cache_dir=shared_cache),
                                             data_dir=SHARED_DATA)
    pool = sorted(project.store.images(project.id, split="pool"), key=lambda i: i["id"])
    holdout = project.store.images(project.id, split="holdout")

    # The backbone on this backend, from the image files (not the cache, which TensorFlow filled).
    backbone = load_backbone(project.settings.backbone)
    files = [project.root / i["path"] for i in pool[:N_EMBEDDED]]
    batches = list(embed_files(files, backbone.embed, backbone.image_size))
    assert not any(b.failures for b in batches)
    np.save(out / "embeddings.npy", np.concatenate([b.embeddings for b in batches]))
    (out / "hashes.txt").write_text("\n".join(i["hash"] for i in pool[:N_EMBEDDED]))

    # The head on this backend, on the cached embeddings: the same labels, the same seed.
    rng = np.random.default_rng(0)
    truth = np.array([project.class_index[i["known_class_id"]] for i in pool])
    chosen = np.concatenate([rng.choice(np.flatnonzero(truth == c), LABELS_PER_CLASS, replace=False)
                             for c in range(len(project.class_names))])
    head = project.new_head().fit(project.embeddings_of([pool[i] for i in chosen]), truth[chosen])
    y_holdout = np.array([project.class_index[i["known_class_id"]] for i in holdout])
    accuracy = float((head.predict(project.embeddings_of(holdout)) == y_holdout).mean())

    # Fine-tuning on this backend: the tuned network with the base's weights is the base, and a
    # short tuning of the top on 20 labeled images trains (gradients through every layer).
    from models.finetune import TunedBackbone, features, fine_tune, split

    images = np.stack([load_image(f, backbone.image_size) for f in files[:20]])
    bottom, top = split(backbone.network, backbone.spec.width, backbone.spec.depth, 15)
    same = TunedBackbone(backbone, 15, top.get_weights(), "check").embed(images[:8])
    activations = np.asarray(bottom.predict_on_batch(backbone.preprocess(images)))
    tuned = fine_tune(top, activations, truth[:20], len(project.class_names), head_epochs=3, epochs=2)
    tuned_features = features(tuned, activations)

    # The whole loop on this backend: strategy, background retrains, scoring.
    rows = replay("demo", out / "replay", budget=REPLAY_BUDGET, batch=10, data_dir=SHARED_DATA,
                  log=lambda *_: None)
    (out / "figures.json").write_text(json.dumps({
        "backend": keras.backend.backend(), "holdout_accuracy": accuracy,
        "n_holdout": len(holdout), "replay": [[r["labels"], r["accuracy"]] for r in rows],
        "tuned_as_base_max_diff": float(np.abs(same - backbone.embed(images[:8])).max()),
        "tuned_moved": float(np.abs(tuned_features - features(top, activations)).max()),
        "tuned_finite": bool(np.isfinite(tuned_features).all())}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
