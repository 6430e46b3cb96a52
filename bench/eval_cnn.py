"""One evaluation of the cheaper methods on a trained CNN (docs/results/cnn_eval_fashion-mnist.md).

    python -m bench.eval_cnn CHECKPOINT [DATA_DIR]

Shapley (784 x 10 forwards per image) is left out to keep it within minutes on 2 cores.
"""

import os
import sys
import time

import torch

import xwp


def main() -> None:
    """Evaluate 200 seeded Fashion-MNIST test images and print the Markdown table."""
    torch.set_num_threads(1)
    ck = xwp.load_checkpoint(sys.argv[1])
    data_dir = sys.argv[2] if len(sys.argv) > 2 else "../shared/data"
    te = xwp.load_dataset("fashion-mnist", "test", data_dir=data_dir)
    methods = ["xwp", "xwpc", "occlusion", "ig", "lrp", "saliency", "deeplift", "gradientshap", "kernelshap", "rise"]
    methods.append("random")
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    ev = xwp.evaluate(ck.model, te, methods, n=200, seed=0, batch_size=64)
    print(ev.markdown())
    print(f"{time.perf_counter() - t0:.0f} s; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
