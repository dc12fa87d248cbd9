"""Classify images with a backbone's ImageNet head: `python -m models IMAGE... [--top 5]`.

Prints, per image, the top classes as index, name and probability. A file that cannot be read is
reported on stderr and the others are still classified (exit status 1 if any failed).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    from models.backbones import BACKBONES, DEFAULT_BACKBONE

    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    from models.backbones import imagenet_class_names, load_backbone
    from models.images import ImageError, load_image

    backbone = load_backbone(args.backbone)
    names = imagenet_class_names()
    failed = 0
    for path in args.images:
        try:
            image = load_image(path, backbone.image_size)
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        probs = backbone.classify(image[None])[0]
        print(path)
        for index in np.argsort(-probs)[:args.top]:
            print(f"  {index:4d}  {names[index]:<40} {probs[index]:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
