"""An independent recomputation of what a claim-3 verdict rests on, at the A* a trial file stores.

Nothing of the code under test is used but the model's forward pass (``pipeline.load_model``) and the data
(``Experiment.load_data``): the group's action on the parameters is built here from pixel rotations and
translations (and kernel and head-map rotations for the CNN, the swap for the toys), E is spanned by the
indicators of the orbits of that action, R and R_aug are written here (R_aug over inputs transformed here), and
the Hessians come from ``torch.func`` (forward-over-reverse products on the orbit basis of E), not from the
pipeline's double backward. Recomputed at A*:

- ‖Π_E∇R‖ and the stationarity ratio ‖Π_E∇R‖ / (|λ|·‖A*‖) (the curvature scale of docs/science.md §7);
- the whole spectrum of H_E, dense, in the orbit basis: H_E ⪰ 0 up to −1e-8 × λ_max?
- the Rayleigh quotient of H_⊥ at the trial's stored lowest E⊥ eigenvector (float32, projected onto E⊥ here)
  and its residual ‖H_⊥u − θu‖: θ < 0 proves λ_min(H_⊥) < 0.

Usage (a results folder, every trial judged *demonstrated* by default, or the trial ids named):

    python tests/independent_check.py results/stability [stab-rototrans-s000 ...]

It prints one line per trial and exits 1 if a trial judged demonstrated is not, recomputed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn import functional as F

STATIONARITY_TOLERANCE, PSD_TOLERANCE, SPECTRAL_GAP, ROUNDOFF = 1e-3, 1e-8, 10.0, 1e-12
BATCH = 32  # Hessian-vector products per vectorised call


# -- the group's action, built here ------------------------------------------------------------------


def pixel_generators(group: str, n: int) -> list[torch.Tensor]:
    """Generators of the group as pixel permutations of an n x n image flattened row-major: image ↦ image[perm]."""
    r, c = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    rotate = (c * n + (n - 1 - r)).reshape(-1)  # a quarter turn
    shift_x = (r * n + (c + 1) % n).reshape(-1)  # one column along
    shift_y = (((r + 1) % n) * n + c).reshape(-1)  # one row along
    return {"rot": [rotate], "trans": [shift_x, shift_y], "trans1d": [shift_x],
            "rototrans": [rotate, shift_x, shift_y]}[group]


def closure(generators: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every element of the group the permutations generate, the identity first."""
    identity = torch.arange(len(generators[0]))
    elements, frontier = {tuple(identity.tolist()): identity}, [identity]
    while frontier:
        new = []
        for element in frontier:
            for g in generators:
                composed = element[g]
                key = tuple(composed.tolist())
                if key not in elements:
                    elements[key] = composed
                    new.append(composed)
        frontier = new
    return list(elements.values())


def parameter_generators(model, network: str, n: int) -> list[torch.Tensor]:
    """The generators' action on the flat parameter vector (``named_parameters`` order) as index permutations:
    θ ↦ θ[perm]. Equivariant-type layers (stored pixel-major: row i·C_out + o, column j·C_in + c) move both
    pixels, the invariant-type layer (column p·C_in + c) its input pixel, the head of the group network nothing;
    the CNN's kernels (one-hot coefficients on the support pixels, row-major) and head maps turn a quarter."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    offsets = np.cumsum([0] + sizes)

    def layer_perms(name, shape, pixels):
        index = torch.arange(math.prod(shape)).reshape(shape)
        if network.startswith("toy"):
            return index.flip(-1).reshape(-1) if name == "w" else index.reshape(-1)
        if network.startswith("cnn"):
            if name.endswith("coefficients") and name.startswith("convs"):
                support = [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]  # cross: a quarter turn permutes it
                turned = [support.index((cc, 2 - rr)) for rr, cc in support]
                return index[..., turned].reshape(-1)
            s = int(round(math.sqrt(shape[-1])))
            return index.reshape(*shape[:-1], s, s).rot90(1, (-2, -1)).reshape(-1)
        if name == "head.weight":
            return index.reshape(-1)
        N = n * n
        if name == "A2.weight":  # (C_out, N * C_in)
            c_out, columns = shape
            view = index.reshape(c_out, N, columns // N)
            return view[:, pixels, :].reshape(-1)
        rows, columns = shape  # (N * C_out, N * C_in)
        view = index.reshape(N, rows // N, N, columns // N)
        return view[pixels][:, :, pixels].reshape(-1)

    if network.startswith("toy"):
        pixel_sets = [None]
    elif network.startswith("cnn"):
        pixel_sets = [None]
    else:
        pixel_sets = pixel_generators(network, n)
    result = []
    for pixels in pixel_sets:
        parts = [layer_perms(name, p.shape, pixels) + int(offset) for (name, p), offset in zip(named, offsets)]
        result.append(torch.cat(parts))
    return result


def orbits(generators: list[torch.Tensor]) -> torch.Tensor:
    """The orbit of every coordinate (labels 0 .. k − 1), by propagating the least index along the permutations."""
    label = torch.arange(len(generators[0]))
    while True:
        before = label.clone()
        for g in generators:
            label = torch.minimum(label, label[g])
            label = label.scatter_reduce(0, g, label, "amin")
        if torch.equal(label, before):
            return torch.unique(label, return_inverse=True)[1]


# -- R, R_aug and their derivatives, written here ---------------------------------------------------------


class Derivatives:
    def __init__(self, model, x, y, loss: str, weight_decay: float, transforms):
        self.model, self.loss, self.weight_decay = model, loss, weight_decay
        named = list(model.named_parameters())
        self.names, self.shapes = [n for n, _ in named], [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.x, self.y = x, y
        self.x_aug = torch.cat([t(x) for t in transforms])
        self.y_aug = y.repeat(len(transforms))

    def R(self, theta, x, y):
        params = {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}
        out = torch.func.functional_call(self.model, params, (x,))
        if self.loss == "squared_error":
            data = ((out.squeeze(1) - y) ** 2).mean()
        else:  # "mse" against one-hot labels: the mean over classes, then over samples
            data = ((out - F.one_hot(y, out.shape[1]).to(out.dtype)) ** 2).mean(dim=1).mean()
        return data + 0.5 * self.weight_decay * (theta @ theta)

    def grad(self, augmented=False):
        x, y = (self.x_aug, self.y_aug) if augmented else (self.x, self.y)
        return torch.func.grad(self.R)(self.theta, x, y)

    def hvps(self, V: torch.Tensor, augmented=False) -> torch.Tensor:
        x, y = (self.x_aug, self.y_aug) if augmented else (self.x, self.y)
        gradient = torch.func.grad(self.R)

        def one(v):
            return torch.func.jvp(lambda t: gradient(t, x, y), (self.theta,), (v,))[1]

        return torch.cat([torch.func.vmap(one)(V[i:i + BATCH]) for i in range(0, len(V), BATCH)])


# -- the check ------------------------------------------------------------------------------------------


def check_trial(path: Path) -> dict:
    """The recomputation at the trial's stored A* (see the module's docstring); numbers and the verdict."""
    from pipeline import experiments, load_model

    with h5py.File(path, "r") as f:
        settings = json.loads(f.attrs["settings"])
        stored = dict(f["results"].attrs)
        perp_vector = torch.from_numpy(f["results/eigenvectors/perp"][0].astype(np.float64))
    network = settings["network"]
    experiment = experiments.get("stability")
    trial = experiment.make_settings({k: v for k, v in settings.items() if k != "experiment"})
    model = experiment.measured_model(trial, load_model(path)).double()
    data = experiment.load_data(trial, torch.device("cpu"), torch.float64)
    x, y = data.images, data.labels
    if network.startswith("toy"):
        transforms = [lambda t: t, lambda t: t.flip(-1)]
    elif network.startswith("cnn"):
        transforms = [lambda t, k=k: torch.rot90(t, k, (2, 3)) for k in range(4)]
    else:
        flat = closure(pixel_generators(network, trial.n))
        transforms = [lambda t, p=p: t.reshape(len(t), -1)[:, p].reshape(t.shape) for p in flat]
    loss = "squared_error" if network.startswith("toy") else trial.loss
    weight_decay = 0.0 if network.startswith("toy") else trial.weight_decay
    d = Derivatives(model, x, y, loss, weight_decay, transforms)

    orbit = orbits(parameter_generators(model, network, getattr(trial, "n", 0)))
    k = int(orbit.max()) + 1
    scale = torch.bincount(orbit, minlength=k).double().rsqrt()

    def lift(C):  # (m, k) coefficients -> (m, D)
        return (C * scale)[:, orbit]

    def restrict(V):  # (m, D) -> (m, k)
        return torch.zeros(len(V), k, dtype=V.dtype).index_add_(1, orbit, V) * scale

    theta = d.theta
    g = d.grad()
    g_E = lift(restrict(g[None]))[0]
    eye = torch.eye(k, dtype=torch.float64)
    H_E = torch.cat([restrict(d.hvps(lift(eye[i:i + BATCH]))) for i in range(0, k, BATCH)])
    asymmetry = float(torch.linalg.matrix_norm(H_E - H_E.T, ord=2)) / 2
    values_E = torch.linalg.eigvalsh((H_E + H_E.T) / 2)
    u = perp_vector - lift(restrict(perp_vector[None]))[0]
    outside = float(torch.linalg.vector_norm(perp_vector - u) / torch.linalg.vector_norm(perp_vector))
    u = u / torch.linalg.vector_norm(u)
    hu = d.hvps(u[None], augmented=True)[0]
    hu = hu - lift(restrict(hu[None]))[0]  # Π_⊥ H_aug Π_⊥ u
    rayleigh = float(u @ hu)
    residual = float(torch.linalg.vector_norm(hu - rayleigh * u))
    # λ_max of H_⊥ by a few power steps (only the scale of the tolerances needs it).
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(20):
        v = v - lift(restrict(v[None]))[0]
        v = d.hvps((v / torch.linalg.vector_norm(v))[None], augmented=True)[0]
    lambda_max = max(float(values_E[-1]), float(torch.linalg.vector_norm(v - lift(restrict(v[None]))[0])))

    lowest_E = float(values_E[0])
    floor = ROUNDOFF * lambda_max
    judged = [abs(rayleigh)] + ([lowest_E] if lowest_E > floor else [])
    curvature = min(j for j in judged if j > floor) if any(j > floor for j in judged) else math.nan
    theta_norm = float(torch.linalg.vector_norm(theta))
    grad_norm = float(torch.linalg.vector_norm(g_E))
    ratio = grad_norm / (curvature * theta_norm) if math.isfinite(curvature) and theta_norm > 0 else math.nan
    negative_E = max(0.0, -(lowest_E - asymmetry))
    bound = max(negative_E, residual, floor)
    checks = {"stationary": ratio <= STATIONARITY_TOLERANCE,
              "H_E ⪰ 0": lowest_E - asymmetry >= -PSD_TOLERANCE * lambda_max,
              "H_⊥ clearly negative": rayleigh < -SPECTRAL_GAP * bound}
    return {"trial": path.stem, "network": network, "dim_E": k, "grad_norm": grad_norm,
            "stored_grad_norm": float(stored["final_projected_grad_norm"]), "ratio": ratio,
            "lambda_min_E": lowest_E, "lambda_max_E": float(values_E[-1]), "asymmetry": asymmetry,
            "stored_lambda_min_E": float(stored["lambda_min_E"]), "rayleigh_perp": rayleigh,
            "residual_perp": residual, "stored_lambda_min_perp": float(stored["lambda_min_perp"]),
            "outside": outside, "lambda_max": lambda_max, "checks": checks, "holds": all(checks.values())}


def demonstrated_trials(folder: Path) -> list[Path]:
    """The trials that the aggregate judged demonstrated (``stationary_points_trials.csv``)."""
    import pandas as pd

    table = pd.read_csv(folder / "aggregate" / "stationary_points_trials.csv")
    return [folder / "trials" / f"{t}.h5" for t in table.loc[table["claim3"] == "demonstrated", "trial_id"]]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    folder = Path(argv[0])
    paths = [folder / "trials" / f"{t}.h5" for t in argv[1:]] or demonstrated_trials(folder)
    failed = 0
    for path in paths:
        r = check_trial(path)
        failed += not r["holds"]
        print(f"{r['trial']}: {'holds' if r['holds'] else 'DOES NOT HOLD'} — dim E {r['dim_E']}, ‖Π_E∇R‖ "
              f"{r['grad_norm']:.3g} (stored {r['stored_grad_norm']:.3g}), ratio {r['ratio']:.3g}, λ_min(H_E) "
              f"{r['lambda_min_E']:.6g} (stored {r['stored_lambda_min_E']:.6g}, asymmetry {r['asymmetry']:.2g}), "
              f"uᵀH_⊥u {r['rayleigh_perp']:.6g} (stored λ_min(H_⊥) {r['stored_lambda_min_perp']:.6g}, residual "
              f"{r['residual_perp']:.2g}, part in E {r['outside']:.2g}), λ_max {r['lambda_max']:.4g}; "
              + ", ".join(f"{name}: {'yes' if ok else 'no'}" for name, ok in r["checks"].items()))
    if not paths:
        print("no trial judged demonstrated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
