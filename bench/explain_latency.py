"""Server-side latency of one canvas stroke on the Explain page, without Streamlit.

Times what the page runs after each stroke: decode the canvas PNG, preprocess it like
MNIST (``xwp.data.images.canvas_to_input``), predict, attribute and render the tiles
(``xwp.serve.explanation.explain``), over simulated drawings of random strokes.

    python -m bench.explain_latency [--n 50] [--methods xwp,xwpc] [--threads 0]

Uses the app's default model from the cache (trains it first if it is missing).
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time

import numpy as np


def drawing(rng: np.random.Generator) -> bytes:
    """A 280x280 canvas PNG with 1-3 white strokes (width 18) on black, like the app's canvas sends."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(1, 4)):
        points = [tuple(int(v) for v in rng.integers(50, 230, size=2)) for _ in range(rng.integers(2, 6))]
        draw.line(points, fill=(255, 255, 255, 255), width=18, joint="curve")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="simulated drawings")
    parser.add_argument(
        "--methods", default="xwp,xwpc", help="comma-separated methods (the page default: xwp,xwpc,ig,occlusion)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # no "missing ScriptRunContext" noise

    import torch
    from PIL import Image

    from xwp.app.shared import DefaultTrainer, default_model_path
    from xwp.checkpoint import load_checkpoint
    from xwp.data.images import canvas_to_input
    from xwp.serve.explanation import explain

    if args.threads:
        torch.set_num_threads(args.threads)
    path = default_model_path()
    if not path.exists():
        print(f"training the default model into {path} ...")
        trainer = DefaultTrainer(path)
        trainer.done.wait()
        if trainer.error:
            raise SystemExit(trainer.error)
    ckpt = load_checkpoint(path)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    rng = np.random.default_rng(0)
    pngs = [drawing(rng) for _ in range(args.n + 3)]
    times = []
    for k, png in enumerate(pngs):
        t0 = time.perf_counter()
        rgba = np.asarray(Image.open(io.BytesIO(png)))  # what CanvasResult.image_data does
        x = canvas_to_input(rgba)
        if x is not None:
            explain(ckpt.model, x, None, methods, initial_model=ckpt.initial_model, classes=ckpt.meta.get("classes"))
        if k >= 3:  # the first calls warm up torch and matplotlib
            times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print(
        f"{len(times)} strokes, methods {','.join(methods)}, torch threads {torch.get_num_threads()}: "
        f"median {statistics.median(times):.0f} ms, p95 {p95:.0f} ms, max {times[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
