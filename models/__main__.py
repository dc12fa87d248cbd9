"""Classify images with a backbone's ImageNet classifier:
`python -m models IMAGE... [--backbone NAME] [--top K]` prints, per image, the top K classes as
index, name and probability. A file that cannot be read is reported on stderr, the others are
still classified, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is not for users

BATCH_SIZE = 32


class UnreadableImage(ValueError):
    pass


def read_image(path: str, size: int):
    """(size, size, 3) uint8 RGB, squashed to the square with bilinear resampling, as the
    embedding path does (it also reproduces the reference network's top-1 on the test photos)."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise UnreadableImage(f"image '{path}' does not exist") from None
    except IsADirectoryError:
        raise UnreadableImage(f"image '{path}' is a folder, not an image") from None
    except Exception as exc:  # Pillow signals unknown, corrupt and truncated files many ways
        reason = "unknown or corrupt format" if "cannot identify" in str(exc) else str(exc)
        raise UnreadableImage(f"image '{path}' is not a readable image ({reason})") from None


def main(argv: list[str] | None = None) -> int:
    from models.backbones import BACKBONES, DEFAULT_BACKBONE

    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list(BACKBONES))
    parser.add_argument("--top", type=int, default=5, metavar="K", help="classes per image (default 5)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 1000:
        parser.error("--top must be between 1 and 1000")

    import numpy as np

    from models.backbones import imagenet_class_names, load_backbone

    backbone = load_backbone(args.backbone)
    names = imagenet_class_names()
    failed = 0
    for start in range(0, len(args.images), BATCH_SIZE):
        paths, images = [], []
        for path in args.images[start:start + BATCH_SIZE]:
            try:
                images.append(read_image(path, backbone.image_size))
                paths.append(path)
            except UnreadableImage as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                failed += 1
        if not images:
            continue
        for path, probs in zip(paths, backbone.classify(np.stack(images))):
            print(path)
            for index in np.argsort(-probs)[:args.top]:
                print(f"  {index:4d}  {names[index]:<40} {probs[index]:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
