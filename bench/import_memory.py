"""Peak memory of importing a folder of huge images, through the real project code (hash, decode,
embed with EfficientNet-Lite0, hold-out, seeds, first head), each case in a fresh process.

Cases: (a) 20 PNGs of 9000x9000 pixels (compressible, about 250 KB each, like issue 9's report)
with the default limits (they are refused: 81 MP > 50 MP); (b) the same with
Settings(max_megapixels=100), so they are decoded and embedded; (c) the baseline: 20 images of
640x480. Peak RSS is the child's VmHWM (ru_maxrss would carry the parent's peak across exec).

    python bench/import_memory.py [--images 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent

MAKE_IMAGES = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw
folder, count, side = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    label = folder / ("a" if i % 2 == 0 else "b")
    label.mkdir(parents=True, exist_ok=True)
    if side > 1000:     # huge: a flat background and big flat shapes, about 250 KB as PNG
        img = Image.new("RGB", (side, side), (40 + 9 * i, 90, 160))
        draw = ImageDraw.Draw(img)
        for x in range(0, side, 1000):
            draw.rectangle([x, x // 2, x + 700, x // 2 + 3000], fill=((x * 7 + 31 * i) % 256, 250, 0))
        img.save(label / f"{i:02d}.png")
    else:               # small: smooth gradients plus noise, like a photo
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:480, 0:640]
        base = np.stack([x * 255 // 639, y * 255 // 479, (x + y + 40 * i) % 256], axis=-1)
        pixels = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(label / f"{i:02d}.png")
"""

IMPORT = """
import json, sys, time
from pathlib import Path

def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

folder, work, changes = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
from loop.project import Paths, create_project
from loop.settings import Settings
from loop.store import Store
from models import images
imported = peak_rss_mb()
work.mkdir(parents=True)
paths = Paths(work, cache_dir=work / "cache")
started = time.perf_counter()
project = create_project(Store(paths.database), "bench", folder, paths, settings=Settings(**changes))
seconds = time.perf_counter() - started
status = project.status()
reasons = sorted({reason.split("' ", 1)[-1] for _, reason in status["skipped"]})
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "imported_rss_mb": imported, "seconds": seconds,
                  "refused": len(status["skipped"]), "reasons": reasons,
                  "embedded": status["images"],   # the images left in the project, all embedded
                  "model_versions": status["model_versions"],
                  "decode_budget_mb": images.DECODE_BUDGET.limit / 2**20,
                  "decode_budget_peak_mb": images.DECODE_BUDGET.peak / 2**20}))
"""


def child(code: str, *args: str) -> dict | None:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=1800, check=False)
    if done.returncode:
        sys.exit(f"child process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def folder_bytes(folder: Path) -> list[int]:
    return [p.stat().st_size for p in folder.rglob("*.png")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--side", type=int, default=9000, help="pixels a side of the huge images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        child(MAKE_IMAGES, str(tmp / "huge"), str(args.images), str(args.side))
        child(MAKE_IMAGES, str(tmp / "small"), str(args.images), "640")
        made = time.perf_counter() - started
        huge_sizes, small_sizes = folder_bytes(tmp / "huge"), folder_bytes(tmp / "small")
        cases = {
            "default": child(IMPORT, str(tmp / "huge"), str(tmp / "work-default"), "{}"),
            "raised": child(IMPORT, str(tmp / "huge"), str(tmp / "work-raised"),
                            json.dumps({"max_megapixels": 100})),
            "baseline": child(IMPORT, str(tmp / "small"), str(tmp / "work-small"), "{}"),
        }

    megapixels = args.side ** 2 / 1e6
    print(f"{args.images} PNGs of {args.side}x{args.side} ({megapixels:.1f} MP, "
          f"{min(huge_sizes) / 1e3:.0f}-{max(huge_sizes) / 1e3:.0f} KB each) and {args.images} of "
          f"640x480 ({min(small_sizes) / 1e3:.0f}-{max(small_sizes) / 1e3:.0f} KB), made in {made:.1f} s; "
          f"{os.cpu_count()} CPUs; decode budget {cases['raised']['decode_budget_mb']:.0f} MiB")
    labels = {"default": f"{args.side}px, default limits (50 MP)",
              "raised": f"{args.side}px, max_megapixels=100",
              "baseline": "640x480, default limits"}
    print(f"{'case':<34} {'embedded':>8} {'refused':>8} {'RSS after imports':>18} "
          f"{'peak RSS':>9} {'budget peak':>12} {'seconds':>8}")
    for key, label in labels.items():
        c = cases[key]
        print(f"{label:<34} {c['embedded']:>8} {c['refused']:>8} {c['imported_rss_mb']:>15.0f} MB "
              f"{c['peak_rss_mb']:>6.0f} MB {c['decode_budget_peak_mb']:>8.0f} MiB {c['seconds']:>8.1f}")
    for reason in cases["default"]["reasons"]:
        print(f"refused with the default limits: '<file>' {reason}")
    extra = cases["raised"]["peak_rss_mb"] - cases["baseline"]["peak_rss_mb"]
    print(f"decoding the huge images cost {extra:.0f} MB of peak RSS over the baseline")
    if args.json:
        print(json.dumps({
            "images": args.images, "side": args.side, "png_kb_each": sum(huge_sizes) / len(huge_sizes) / 1e3,
            "refused_default": cases["default"]["refused"],
            "refused_reasons_default": cases["default"]["reasons"],
            "peak_rss_mb_default_limits": cases["default"]["peak_rss_mb"],
            "seconds_default_limits": cases["default"]["seconds"],
            "peak_rss_mb_raised_limit": cases["raised"]["peak_rss_mb"],
            "embedded_raised_limit": cases["raised"]["embedded"],
            "seconds_raised_limit": cases["raised"]["seconds"],
            "baseline_peak_rss_mb": cases["baseline"]["peak_rss_mb"],
            "seconds_baseline": cases["baseline"]["seconds"],
            "imported_rss_mb": cases["baseline"]["imported_rss_mb"],
            "decode_budget_mb": cases["raised"]["decode_budget_mb"],
            "decode_budget_peak_mb_raised_limit": cases["raised"]["decode_budget_peak_mb"],
            "peak_rss_over_baseline_mb_raised_limit": extra,
        }))


if __name__ == "__main__":
    main()
