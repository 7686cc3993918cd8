"""Start-up time of a training run on a large image folder: from nothing to the first training batch.

Writes N tiny JPEGs (8x8, one byte string copied into every file) into 1,000 class folders under a temporary
folder, then times, each in a fresh state of the package: listing the folder, ``build_data`` (listing, lazy
verification beyond 50,000 files, normalisation statistics from 2,000 files), the first batch of the training
loader (2 workers), and the same ``build_data`` from the listing saved with the run (resume). The files are
written just before, so the folder is in the page cache (a cold disk adds its own seek time).

    python benchmarks/folder_startup.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    command_line,
    git_rev,
    machine,
    markdown_table,
    print_section,
    save_json,
    write_section,
)

CLASSES = 1000
TARGET_S = 30.0


def write_folder(root: Path, n: int) -> float:
    """``n`` copies of one 8x8 JPEG in CLASSES class folders; returns seconds taken."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    t0 = time.perf_counter()
    per = -(-n // CLASSES)
    done = 0
    for c in range(CLASSES):
        d = root / f"class_{c:04d}"
        d.mkdir(parents=True)
        for i in range(min(per, n - done)):
            with open(d / f"img_{i:06d}.jpg", "wb") as f:
                f.write(data)
        done += min(per, n - done)
    return time.perf_counter() - t0


def measure(root: Path, run_dir: Path) -> dict:
    from ssl_transfer.data import build_data, make_train_loader
    from ssl_transfer.data.listing import list_folder
    from ssl_transfer.recipe import load_recipe

    cfg = load_recipe({"data": {"source": "imagefolder", "root": str(root), "num_workers": 2}}).data
    t0 = time.perf_counter()
    listing = list_folder(root)
    t_list = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = build_data(cfg)
    t_build = time.perf_counter() - t0
    loader = make_train_loader(data.train, 256, seed=0, num_workers=2)
    images, _ = next(iter(loader))
    t_first = time.perf_counter() - t0
    del loader

    data.save_listings(run_dir)
    t0 = time.perf_counter()
    again = build_data(cfg, listing_dir=run_dir)
    t_resume = time.perf_counter() - t0
    assert len(again.train) == len(data.train) == len(listing)
    return {
        "files": len(listing),
        "list_s": t_list,
        "build_data_s": t_build,
        "first_batch_s": t_first,
        "resume_build_data_s": t_resume,
        "batch_shape": list(images.shape),
        "listing_mb": (run_dir / "data" / "listing-train.npz").stat().st_size / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    args = ap.parse_args()
    rows, store = [], {"machine": machine(), "git": git_rev(), "rows": []}
    for n in [int(s) for s in args.sizes.split(",")]:
        top = Path(tempfile.mkdtemp(prefix=f"startup{n}-", dir=args.dir))
        try:
            t_write = write_folder(top / "images", n)
            r = measure(top / "images", top / "run")
            r["write_s"] = t_write
        finally:
            shutil.rmtree(top, ignore_errors=True)
        print(r, flush=True)
        store["rows"].append(r)
        rows.append(
            [
                f"{r['files']:,}",
                f"{r['list_s']:.1f}",
                f"{r['build_data_s']:.1f}",
                f"**{r['first_batch_s']:.1f}**",
                f"{r['resume_build_data_s']:.1f}",
                f"{r['listing_mb']:.1f}",
            ]
        )
    save_json(Path(__file__).parent / "results" / "folder_startup.json", store)
    worst = max(r["first_batch_s"] for r in store["rows"])
    table = markdown_table(
        [
            "files",
            "list folder s",
            "build_data s",
            "to first training batch s",
            "resume: build_data from the run's listing s",
            "listing MB",
        ],
        rows,
    )
    write_section(
        "folder_startup",
        f"""## Start-up on million-image folders (issue 15)

Tiny JPEGs in 1,000 class folders, written just before (page cache warm). "To first training batch": `build_data`
(list with `os.scandir`, no file opened; verification as files are read, beyond 50,000 files; statistics from 2,000
files) plus the training loader's first batch of 256 with 2 workers. Target: under {TARGET_S:.0f} s at 1M files;
slowest here **{worst:.1f} s**. {store["machine"]} (git {store["git"]}).

Command: `{command_line("folder_startup.py", ap, args)}`

{table}
""",
    )
    print_section("folder_startup")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
