"""Random rotation of a layer's basis (Bau et al. 2017, section 3.2; METHODS A1).

Is interpretability a property of a network's axes, or of its representation
space?  Rotate each pixel's activation vector by an orthogonal matrix,
``a'(:, y, x) = R a(:, y, x)``, before the quantile thresholds, and dissect
the rotated units: if unique detectors fall as the rotation grows, the axes
the network learnt are more interpretable than random directions of the
same space.

``Q`` is drawn uniformly from SO(n) (QR of a Gaussian with the sign fix, as
the original ``src/rotate.py``), and ``R(alpha)`` goes from the identity
(alpha = 0) to ``Q`` (alpha = 1) along the geodesic ``expm(alpha logm Q)``.
The original code's eigen-angle construction is the named option
``method="eigen-angle"``.  Every alpha (and seed) is one more derived layer
of the same dissection (:class:`netdissect.pipeline.DerivedLayer`): one
forward pass per batch serves all of them, and the threshold pass and the
IoU pass rotate the same activations with the same matrix.

Run directory (a dissection run with the rotated layers beside the plain
ones, plus)::

    rotation.csv   one row per (layer, alpha, seed, convention, category)
    rotation.json  the experiment's parameters and the rotated layers' names
    rotation/      index.html, rotation-<layer>.png/.svg (the plots)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..dissection import Dissection

#: how R(alpha) is formed from Q
METHODS = ("expm", "eigen-angle")
ROTATION_CSV = "rotation.csv"
ROTATION_JSON = "rotation.json"
PAGE_DIR = "rotation"


def random_rotation(n: int, seed: int) -> "torch.Tensor":
    """A rotation drawn uniformly (Haar measure) from SO(n), as the original ``randomRotation``.

    QR of an n x n matrix of i.i.d. N(0, 1) values (numpy's
    ``RandomState(seed).normal``), ``Q diag(sign(diag R))`` (uniform on O(n)),
    and the first row negated when the determinant is -1.

    Parameters
    ----------
    n : int
        The dimension (a layer's units).
    seed : int
        The random seed.

    Returns
    -------
    torch.Tensor
        (n, n) float64 orthogonal matrix with determinant +1.

    Raises
    ------
    ConfigError
        When ``n`` < 1.
    """
    import torch

    if int(n) < 1:
        raise ConfigError(f"rotation dimension n must be at least 1, got {n}")
    gauss = np.random.RandomState(int(seed)).normal(size=(int(n), int(n)))
    q, r = np.linalg.qr(gauss)
    d = np.sign(np.diagonal(r))
    d[d == 0] = 1.0
    q = q * d[None, :]
    if np.linalg.det(q) < 0:
        q[0] = -q[0]
    return torch.from_numpy(np.ascontiguousarray(q))


def rotation_eigen(q: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Eigen-angles and a unitary eigenbasis of a rotation, through a Hermitian eigenproblem.

    ``q`` is normal: ``q = V diag(exp(i theta)) V^H`` with V unitary.  V is
    found as the eigenvectors of the Hermitian ``H = -i (q - q^T) / 2 = V
    diag(sin theta) V^H`` (``torch.linalg.eigh``: stable, and many times faster
    than a general eigen-solver), and each angle is read from the Rayleigh
    quotient ``v^H q v = exp(i theta)``.

    Parameters
    ----------
    q : torch.Tensor
        (n, n) orthogonal matrix.

    Returns
    -------
    theta : torch.Tensor
        (n,) float64 angles in (-pi, pi].
    vectors : torch.Tensor
        (n, n) complex128 unitary matrix, column k the eigenvector of ``exp(i theta_k)``.

    Raises
    ------
    ConfigError
        When ``q`` is not square.
    """
    import torch

    _check_square(q)
    q = q.to(torch.float64)
    h = (-0.5j) * (q - q.T).to(torch.complex128)
    _, vectors = torch.linalg.eigh(h)
    rayleigh = (vectors.conj() * (q.to(torch.complex128) @ vectors)).sum(dim=0)
    return torch.angle(rayleigh), vectors


def rotation_logarithm(q: "torch.Tensor") -> "torch.Tensor":
    """The principal logarithm of a rotation: the real skew-symmetric L with ``expm(L) = q``.

    ``L = Re(V diag(i theta) V^H)`` from :func:`rotation_eigen`, made exactly
    skew-symmetric.

    Parameters
    ----------
    q : torch.Tensor
        (n, n) orthogonal matrix with determinant +1.

    Returns
    -------
    torch.Tensor
        (n, n) float64 skew-symmetric matrix.

    Raises
    ------
    ConfigError
        When ``q`` is not square.
    """
    theta, vectors = rotation_eigen(q)
    log = (vectors * (1j * theta).to(vectors.dtype)[None, :]) @ vectors.conj().T
    real = log.real
    return (real - real.T) / 2


def plane_decomposition(q: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The invariant planes of a rotation and the magnitude of its angle in each.

    For each conjugate pair of eigenvalues ``exp(+-i theta)`` (theta > 0),
    with ``v = x + i y`` the eigenvector of ``exp(+i theta)``, the plane is
    spanned by ``(x, y) / |x|`` (orthonormal because ``q`` is normal); the
    remaining (real) eigenvectors follow, one column each.  In this basis
    ``q`` is block diagonal with blocks ``[[cos t, sin t], [-sin t, cos t]]``,
    the real Schur form the original code reads its angles from.

    Parameters
    ----------
    q : torch.Tensor
        (n, n) orthogonal matrix with determinant +1.

    Returns
    -------
    W : torch.Tensor
        (n, n) float64 orthogonal matrix: the planes' bases, two columns each, then the fixed axes.
    angles : torch.Tensor
        (n // 2,) float64 angle magnitudes in [0, pi], one per plane (0 for
        a pair of fixed axes).

    Raises
    ------
    ConfigError
        When ``q`` is not square.
    """
    import torch

    theta, vectors = rotation_eigen(q)
    n = q.shape[0]
    eps = 1e-9
    planes = torch.nonzero(theta > eps).flatten()
    planes = planes[torch.argsort(theta[planes], descending=True, stable=True)]
    columns, angles = [], []
    for k in planes.tolist():
        v = vectors[:, k]
        x, y = v.real, v.imag
        norm = torch.linalg.norm(x)
        columns += [x / norm, y / norm]
        angles.append(float(theta[k]))
    fixed = torch.nonzero(theta.abs() <= eps).flatten().tolist() + \
        torch.nonzero(theta.abs() >= math.pi - eps).flatten().tolist()
    for k in fixed:  # real eigenvectors (eigenvalue +1 or -1), up to a complex phase
        v = vectors[:, k]
        v = v * torch.conj(v[torch.argmax(v.abs())]) / v.abs().max()
        columns.append(v.real / torch.linalg.norm(v.real))
    w = torch.stack(columns[:n], dim=1) if columns else torch.eye(n, dtype=torch.float64)
    w, r = torch.linalg.qr(w)  # re-orthonormalise (columns are orthogonal up to rounding)
    w = w * torch.sign(torch.diagonal(r))[None, :]
    # pairs of fixed axes count as planes of angle 0 (eigenvalue +1) or pi (eigenvalue -1)
    rest = [0.0 if abs(float(theta[k])) <= eps else math.pi for k in fixed]
    angles += [rest[i] for i in range(0, len(rest) - 1, 2)]
    return w, torch.tensor(angles[: n // 2], dtype=torch.float64)


def fractional_rotation(q: "torch.Tensor", alpha: float, *, method: str = "expm") -> "torch.Tensor":
    """R(alpha): a rotation a fraction ``alpha`` of the way from the identity to ``q``.

    Parameters
    ----------
    q : torch.Tensor
        (n, n) rotation (e.g. :func:`random_rotation`).
    alpha : float
        0 gives the identity.
    method : str
        ``"expm"`` (the default): ``expm(alpha logm q)``, the geodesic, so
        ``R(1) = q``.  ``"eigen-angle"``: the original ``randomRotationPowers``:
        ``W blockdiag(rot(alpha |t_k|)) W^T`` with ``rot(t) = [[cos t, -sin t],
        [sin t, cos t]]`` in the planes of :func:`plane_decomposition`.  The
        arccos of the original drops each block's sign, so its R(1) is not
        ``q``: it turns every plane by the right angle, in the orientation
        its Schur solver returned (scipy's: some planes one way, some the
        other).  Here every plane is taken in the orientation of
        :func:`plane_decomposition`, so the eigen-angle ``R(1) = q^T``: the
        same planes and angle magnitudes, each turned the other way; still a
        uniformly random rotation.

    Returns
    -------
    torch.Tensor
        (n, n) float64 rotation (orthogonal, determinant +1).

    Raises
    ------
    ConfigError
        For an unknown ``method`` or a non-square ``q``.
    """
    return rotation_powers(q, [alpha], method=method)[0]


def rotation_powers(q: "torch.Tensor", alphas: Sequence[float], *, method: str = "expm") -> list["torch.Tensor"]:
    """R(alpha) for each of ``alphas`` (:func:`fractional_rotation`), decomposing ``q`` once.

    Parameters
    ----------
    q : torch.Tensor
        (n, n) rotation.
    alphas : sequence of float
        The fractions.
    method : str
        ``"expm"`` or ``"eigen-angle"``.

    Returns
    -------
    list of torch.Tensor
        (n, n) float64 rotations, in the order of ``alphas``.

    Raises
    ------
    ConfigError
        For an unknown ``method`` or a non-square ``q``.
    """
    import torch

    if method not in METHODS:
        raise ConfigError(f"rotation method {method!r} is not one of {METHODS}")
    _check_square(q)
    n = q.shape[0]
    out: list[torch.Tensor] = []
    log = w = angles = None
    for alpha in alphas:
        if alpha == 0:
            out.append(torch.eye(n, dtype=torch.float64))
        elif method == "expm":
            log = rotation_logarithm(q) if log is None else log
            out.append(torch.linalg.matrix_exp(float(alpha) * log))
        else:
            if w is None:
                w, angles = plane_decomposition(q)
            blocks = torch.eye(n, dtype=torch.float64)
            a = float(alpha) * angles
            idx = torch.arange(0, 2 * len(angles), 2)
            blocks[idx, idx] = torch.cos(a)
            blocks[idx + 1, idx + 1] = torch.cos(a)
            blocks[idx, idx + 1] = -torch.sin(a)
            blocks[idx + 1, idx] = torch.sin(a)
            out.append(w @ blocks @ w.T)
    return out


def unpermutation(r1: "torch.Tensor") -> "torch.Tensor":
    """The original ``unpermute`` option: a greedy unit order that brings R(1)'s rows near the identity.

    Rows in descending order of their largest entry; each takes its largest
    column not yet taken.  ``r[perm]`` (that is ``P r``) relabels the
    rotated units only, so detector counts do not change.

    Parameters
    ----------
    r1 : torch.Tensor
        (n, n) the full rotation R(1).

    Returns
    -------
    torch.Tensor
        (n,) int64 ``perm``: rotated unit ``perm[c]`` becomes unit ``c``.
    """
    import torch

    m = r1.detach().cpu().to(torch.float64).numpy()
    n = m.shape[0]
    perm = np.full(n, -1, dtype=np.int64)
    for row in np.argsort(-m.max(axis=1), kind="stable"):
        for col in np.argsort(-m[row], kind="stable"):
            if perm[col] < 0:
                perm[col] = row
                break
    return torch.from_numpy(perm)


def _check_square(q) -> None:
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ConfigError(f"a rotation must be a square matrix, got shape {tuple(q.shape)}")


class _Rotate:
    """``acts -> R acts`` per pixel: (B, U, h, w) float32 -> (B, U, h, w) float32."""

    def __init__(self, r: "torch.Tensor"):
        import torch

        self.r = r.to(torch.float32)

    def __call__(self, acts: "torch.Tensor") -> "torch.Tensor":
        if self.r.device != acts.device:
            self.r = self.r.to(acts.device)
        b, u, h, w = acts.shape
        return (self.r @ acts.reshape(b, u, h * w)).reshape(b, u, h, w)


def rotated_name(layer: str, seed: int, alpha: float) -> str:
    """The name of the derived layer of ``layer`` rotated by R(alpha) of seed ``seed``."""
    return f"{layer}@rotation(seed={int(seed)},alpha={float(alpha):g})"


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if int(seeds) < 1:
            raise ConfigError(f"seeds must be at least 1 (or a list of seeds), got {seeds}")
        return list(range(1, int(seeds) + 1))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"seeds {list(seeds)} must be a non-empty list without repeats")
    return out


def _alpha_list(alphas: Sequence[float]) -> list[float]:
    out = [float(a) for a in alphas]
    if not out or len(set(out)) != len(out) or any(not math.isfinite(a) or a < 0 for a in out):
        raise ConfigError(f"alphas {list(alphas)} must be a non-empty list of distinct finite values >= 0")
    return sorted(out)


def rotation(
    model: Any,
    data: Any,
    *,
    layers: list[str],
    alphas: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    seeds: int | Sequence[int] = 1,
    method: str = "expm",
    unpermute: bool = False,
    out: str | Path | None = None,
    progress: bool = True,
    page: bool = True,
    **options: Any,
) -> "Rotation":
    """Dissect ``layers`` in randomly rotated bases R(alpha) a(:, y, x) (Bau et al. 2017, section 3.2).

    One dissection run: each (layer, seed, alpha) with alpha > 0 (or with
    ``unpermute``) is a derived layer rotating the traced layer's raw
    activations before the thresholds, so one forward pass per batch serves
    every rotation and both passes see the same one.  alpha = 0 is the plain
    layer itself (bit-identical to dissecting it alone).  Several seeds give
    the random-basis control: the spread of the counts over independent
    rotations.

    Parameters
    ----------
    model, data
        As :func:`netdissect.dissect`.
    layers : list of str
        Layers to rotate (each with a channel dimension U; R is U x U).
    alphas : sequence of float
        Fractions of the rotation (0: the network's own basis, 1: a uniformly random one).
    seeds : int or sequence of int
        Rotations to draw: a count n (seeds 1..n) or the seeds themselves.
    method : str
        How R(alpha) is formed (:func:`fractional_rotation`): ``"expm"`` or
        the original code's ``"eigen-angle"``.
    unpermute : bool
        Relabel each rotated layer's units by :func:`unpermutation` of R(1),
        as the original scripts do (the counts do not change; alpha = 0 is
        then a permutation and no longer the plain layer).
    out : str or Path, optional
        The run directory (a temporary folder when None); resumable.
    progress : bool
        Show progress bars.
    page : bool
        Write ``RUN_DIR/rotation/index.html`` and its plots (:meth:`Rotation.write_page`).
    **options
        Passed to :func:`netdissect.dissect` (``quantile=``, ``batch_size=``, ``config=``...).

    Returns
    -------
    Rotation
        The counts (``table``), the underlying :class:`~netdissect.Dissection`, plots.

    Raises
    ------
    ConfigError
        For bad ``alphas``, ``seeds`` or ``method`` (and as :func:`netdissect.dissect`).
    """
    import tempfile

    from ..engine.plan import probe_layers
    from ..pipeline import DerivedLayer, as_loaded, dissect

    if method not in METHODS:
        raise ConfigError(f"rotation method {method!r} is not one of {METHODS}")
    alpha_list, seed_list = _alpha_list(alphas), _seed_list(seeds)
    layers = list(layers)
    loaded = as_loaded(model, options.pop("weights", None), options.pop("preprocess", None))
    units = _layer_units(loaded, data, layers, probe_layers)
    derived: dict[str, DerivedLayer] = {}
    names: dict[tuple[str, int, float], str] = {}
    for layer in layers:
        for seed in seed_list:
            q = random_rotation(units[layer], seed)
            powers = rotation_powers(q, alpha_list + [1.0], method=method)
            perm = unpermutation(powers[-1]) if unpermute else None
            for alpha, r in zip(alpha_list, powers):
                if alpha == 0 and perm is None:
                    names[layer, seed, alpha] = layer
                    continue
                if perm is not None:
                    r = r[perm]
                name = rotated_name(layer, seed, alpha)
                names[layer, seed, alpha] = name
                derived[name] = DerivedLayer(layer, _Rotate(r), {"rotation": "random", "seed": seed, "alpha": alpha,
                                                                "method": method, "unpermute": bool(unpermute)})
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="netdissect-rotation-"))
    result = dissect(loaded, data, layers=layers, out=run_dir, progress=progress, derived=derived, **options)
    table = rotation_table(result, names)
    params = {"layers": layers, "alphas": alpha_list, "seeds": seed_list, "method": method,
              "unpermute": bool(unpermute), "key": result.summary["key"],
              "rotated": [{"layer": k[0], "seed": k[1], "alpha": k[2], "name": v} for k, v in names.items()]}
    table.to_csv(run_dir / ROTATION_CSV, index=False)
    (run_dir / ROTATION_JSON).write_text(json.dumps(params, indent=1) + "\n")
    rot = Rotation(run_dir)
    if page:
        rot.write_page()
    return rot


def _layer_units(loaded, data, layers, probe_layers) -> dict[str, int]:
    """Units of each layer, from one dry run on a blank input (the channel count does not depend on its size)."""
    import torch

    from ..engine.sources import Source

    size = tuple(loaded.preprocess.size or (getattr(data, "image_size", None) if isinstance(data, Source) else None)
                 or (224, 224))
    x = loaded.preprocess(torch.zeros(1, 3, *size, dtype=torch.uint8))
    shapes = probe_layers(loaded.module, x, layers)
    return {name: int(units) for name, (units, _) in shapes.items()}


def rotation_table(result: "Dissection", names: dict[tuple[str, int, float], str]) -> pd.DataFrame:
    """Unique detectors per (layer, alpha, seed, convention, category) of a rotation run.

    Parameters
    ----------
    result : Dissection
        The run holding the plain and the rotated layers.
    names : dict
        (layer, seed, alpha) -> the name of the layer in ``result`` that holds it.

    Returns
    -------
    pandas.DataFrame
        Columns layer, alpha, seed, convention, category, unique (distinct
        concepts), units (detector units of that category), detectors (the
        rotated layer's detectors, top label), total_unique (over categories).
    """
    rows = []
    for (layer, seed, alpha), name in names.items():
        s = result.summary["layers"][name]
        for convention, counts in s["unique_detectors"].items():
            for category in result.concepts.categories:
                rows.append({"layer": layer, "alpha": alpha, "seed": seed, "convention": convention,
                             "category": category, "unique": counts["unique"].get(category, 0),
                             "units": counts["units"].get(category, 0), "detectors": s["detectors"],
                             "total_unique": counts["total_unique"]})
    return pd.DataFrame(rows).sort_values(["layer", "convention", "seed", "alpha"], kind="stable",
                                          ignore_index=True)


class Rotation:
    """The result of :func:`rotation`, read from its run directory.

    Parameters
    ----------
    run_dir : str or Path
        A finished rotation run.

    Raises
    ------
    DatasetError
        When ``run_dir`` holds no finished rotation run.
    """

    def __init__(self, run_dir: str | Path):
        from ..errors import DatasetError

        self.run_dir = Path(run_dir)
        if not (self.run_dir / ROTATION_JSON).is_file() or not (self.run_dir / ROTATION_CSV).is_file():
            raise DatasetError(f"{str(self.run_dir)!r} holds no finished rotation experiment "
                               f"(no {ROTATION_JSON} / {ROTATION_CSV})")
        self.params: dict[str, Any] = json.loads((self.run_dir / ROTATION_JSON).read_text())
        self.table: pd.DataFrame = pd.read_csv(self.run_dir / ROTATION_CSV, keep_default_na=False,
                                               dtype={"category": str, "convention": str, "layer": str})

    @classmethod
    def load(cls, run_dir: str | Path) -> "Rotation":
        """Read the rotation run in ``run_dir``."""
        return cls(run_dir)

    @property
    def dissection(self) -> "Dissection":
        """The underlying dissection (plain and rotated layers)."""
        from ..dissection import Dissection

        return Dissection.load(self.run_dir)

    def layer_name(self, layer: str, seed: int, alpha: float) -> str:
        """The layer of :attr:`dissection` holding ``layer`` rotated by R(alpha) of ``seed``.

        Raises
        ------
        ConfigError
            For a combination the run does not have.
        """
        for r in self.params["rotated"]:
            if r["layer"] == layer and r["seed"] == int(seed) and r["alpha"] == float(alpha):
                return r["name"]
        raise ConfigError(f"this rotation run has no layer {layer!r} with seed {seed} and alpha {alpha} "
                          f"(layers {self.params['layers']}, seeds {self.params['seeds']}, "
                          f"alphas {self.params['alphas']})")

    def summary(self, convention: str = "per-category") -> pd.DataFrame:
        """Mean and standard deviation over seeds of unique detectors per (layer, alpha).

        Returns
        -------
        pandas.DataFrame
            Columns layer, alpha, one column per category (mean unique
            detectors), total_unique, total_unique_std, detectors.

        Raises
        ------
        ConfigError
            For an unknown ``convention``.
        """
        from ..labeling.iou import CONVENTIONS

        if convention not in CONVENTIONS:
            raise ConfigError(f"convention {convention!r} is not one of {CONVENTIONS}")
        t = self.table[self.table["convention"] == convention]
        per_cat = t.pivot_table(index=["layer", "alpha"], columns="category", values="unique", aggfunc="mean",
                                sort=False)
        per_seed = t.drop_duplicates(["layer", "alpha", "seed"])
        totals = per_seed.groupby(["layer", "alpha"], sort=False).agg(
            total_unique=("total_unique", "mean"), total_unique_std=("total_unique", "std"),
            detectors=("detectors", "mean"))
        out = per_cat.join(totals).reset_index()
        out["total_unique_std"] = out["total_unique_std"].fillna(0.0)
        out.columns.name = None
        return out

    def plot(self, layer: str | None = None, *, convention: str = "per-category", ax=None):
        """Unique detectors per category (stacked bars, mean over seeds) against alpha; returns the Axes."""
        from ..report.experiments import plot_rotation

        return plot_rotation(self, layer or self.params["layers"][0], convention=convention, ax=ax)

    def write_page(self) -> Path:
        """Write ``RUN_DIR/rotation/index.html`` with the plots and the table; returns its path."""
        from ..report.experiments import write_rotation_page

        return write_rotation_page(self)

    def __repr__(self) -> str:
        return (f"Rotation({str(self.run_dir)!r}; layers {self.params['layers']}, alphas {self.params['alphas']}, "
                f"seeds {self.params['seeds']})")
