"""Related-work methods on the typeface MLP: timings and the numbers the docs quote.

    OMP_NUM_THREADS=1 python -m bench.related_methods [--n 8] [--device cpu|cuda]

Trains the paper's 784-400-100-10 MLP on the built-in typeface digits (3 epochs, seed 0, as
the tests' fixture), then on ``n`` test images:

1. ms per image of Pathwise, the two Zennit LRP composites and AD occlusion (one process,
   batch of ``n``, best of 3), next to Captum LRP and Input x Gradient;
2. how close Captum's epsilon rule at 1e-9 is to Input x Gradient (max |difference| relative
   to max |IxG|, per image);
3. Pathwise vs Input x Gradient and the units Pathwise keeps per hidden layer;
4. AD occlusion vs Occlusion (both float64): max |difference|.
"""

from __future__ import annotations

import argparse
import time

import torch

from xwp import MLP, train
from xwp.attribution import make_method
from xwp.attribution.pathwise import Pathwise
from xwp.data.datasets import load_dataset


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Run the checks and print a Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    train_set, test_set = load_dataset("typeface", "train"), load_dataset("typeface", "test")
    model = MLP((784, 400, 100, 10), seed=0)
    train(model, train_set, test_set, epochs=3, seed=0, device="cpu")
    model = model.eval().to(args.device)
    x, y = test_set.images[: args.n].to(args.device), test_set.labels[: args.n].to(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, {args.n} images\n")

    print("| method | ms per image |\n|---|---|")
    for name in ("pathwise", "lrp-epsilon-plus-flat", "lrp-gamma-box", "ad-occlusion", "lrp", "occlusion"):
        method = make_method(name, model)
        secs = best_of(lambda method=method: method.attribute(x, target=y))
        print(f"| {name} | {1000 * secs / args.n:.1f} |")
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).gather(1, y[:, None]).sum(), xg)
    ixg = (x * grad).reshape(args.n, -1)

    lrp = make_method("lrp", model).attribute(x, target=y).reshape(args.n, -1)
    rel = (lrp - ixg).abs().amax(1) / ixg.abs().amax(1)
    print(f"\nCaptum LRP (epsilon 1e-9) vs IxG: max|diff|/max|IxG| per image: max {rel.max():.2e}", end="")
    print(f", median {rel.median():.2e}")

    pw = Pathwise(model)
    a = pw.attribute(x, target=y).reshape(args.n, -1)
    rel = (a - ixg).abs().amax(1) / ixg.abs().amax(1)
    kept = {k: v.sum(1).float().mean().item() for k, v in pw.select(x, target=y).items()}
    active = [(torch.relu(lin(h)) > 0).sum(1).float().mean().item() for lin, h in _hidden_inputs(model, x)]
    print(f"Pathwise vs IxG: max|diff|/max|IxG| per image: median {rel.median():.2f}, max {rel.max():.2f}")
    print(f"Pathwise mean kept units per hidden layer (ReLU position: units): {kept}; active units: {active}")

    ad = make_method("ad-occlusion", model).attribute(x, target=y)
    occ = make_method("occlusion", model).attribute(x, target=y)
    print(f"AD occlusion vs Occlusion (float64): max|diff| = {(ad - occ).abs().max():.2e}")


def _hidden_inputs(model: MLP, x: torch.Tensor):
    """(layer, its input) for each hidden Linear layer."""
    h, out = x.reshape(x.shape[0], -1), []
    with torch.no_grad():
        for lin in model.linears[:-1]:
            out.append((lin, h))
            h = torch.relu(lin(h))
    return out


if __name__ == "__main__":
    main()
