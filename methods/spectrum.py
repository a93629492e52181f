"""The loss Hessian over the prunable weights, its spectrum, the Lipschitz estimate of F, and IMC's gap rule.

Follows `../shared/specs/imc.md` (steps 2-4) and `../shared/specs/lth-cs-pyhessian.md` (sections 3-4);
the theory is Theorem 5 of the IMC paper's supplement (`../shared/paper/imc-supplementary.txt`).

- `prunable_hessian(model, inputs, labels)`: PyHessian's `pyhessian.hessian` (PyPI 0.1) on one fixed
  batch, restricted to the prunable weights (every other parameter is frozen while it is built, so
  PyHessian's `get_params_grad` sees only them; BN and biases are held fixed), model in eval mode.
  `zero_grad(set_to_none=True)` before, `.grad` dropped and train mode restored after. The
  `HessianOperator` it yields works on flat vectors: `hvp` (PyHessian's `hessian_vector_product`),
  `gradient_at(U)` (the loss gradient at W + U, through `torch.func.functional_call`, so the weights
  PyHessian's graph holds are never modified in place) and `top_eigenpairs` (PyHessian's power
  iteration `eigenvalues(top_n)`).
- `slq`: stochastic Lanczos quadrature written here, because PyHessian 0.1's `density()` calls the
  removed `torch.eig`. Like PyHessian: a normalised Rademacher start vector per run, full
  reorthogonalisation against every earlier Lanczos vector, the tridiagonal T diagonalised (here by
  `torch.linalg.eigh` in float64); nodes = Ritz values, weights = squared first components of T's
  eigenvectors, averaged over runs (they sum to 1). Silent in PyHessian and named here: Lanczos stops
  early when the residual norm beta falls below `BREAKDOWN_TOLERANCE` times the largest |alpha| (an
  invariant subspace: the quadrature is then exact), and the steps are capped at the dimension d.
- `remainder` and `lipschitz_estimate`: F(U) = -grad L(W+U) + grad L(W) + H U and the secant
  estimate K = max over random pairs (U_a, U_b) with ||U||_p = Delta of
  ||F(U_a) - F(U_b)||_p / ||U_a - U_b||_p. The random directions are Gaussian, scaled to p-norm Delta
  (the paper names p and Delta but not the sampling; this is our choice).
- `choose_split`: the gap rule of the spec's step 4 on a spectral measure (nodes, weights), with both
  readings of "fraction of the spectrum" (`mass`: the weights; `nodes`: the share of nodes).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from bench.errors import BenchError
from bench.masks import prunable_parameters
from bench.seeds import derive_seed

BREAKDOWN_TOLERANCE = 1e-10
"""Lanczos stops when beta < this x max |alpha| (the Krylov space is invariant)."""
SPECTRUM_COUNTS = ("mass", "nodes")


class HessianOperator:
    """The Hessian of the loss on one fixed batch w.r.t. the prunable weights, on flat vectors."""

    def __init__(self, engine: PyHessian, model: nn.Module, names: list[str], inputs: torch.Tensor,
                 labels: torch.Tensor):
        self.engine = engine
        self.model = model
        self.names = names
        self.inputs = inputs
        self.labels = labels
        self.params: list[torch.Tensor] = engine.params
        self.shapes = [param.shape for param in self.params]
        self.sizes = [param.numel() for param in self.params]
        self.dimension = sum(self.sizes)
        self.weights = self.flatten(self.params).detach()
        self.gradient = self.flatten(engine.gradsH).detach()

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def flatten(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([tensor.reshape(-1) for tensor in tensors])

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        return [piece.reshape(shape) for piece, shape in zip(vector.split(self.sizes), self.shapes, strict=True)]

    def hvp(self, vector: torch.Tensor) -> torch.Tensor:
        """H v through PyHessian's `hessian_vector_product` (the graph of its gradient is reused)."""
        product = hessian_vector_product(self.engine.gradsH, self.params, self.unflatten(vector))
        return self.flatten(product).detach()

    def gradient_at(self, shift: torch.Tensor) -> torch.Tensor:
        """grad L(W + shift) on the same batch, model in eval mode (W itself is not touched)."""
        shifted = [(param.detach() + piece).requires_grad_(True)
                   for param, piece in zip(self.params, self.unflatten(shift), strict=True)]
        logits = functional_call(self.model, dict(zip(self.names, shifted, strict=True)), (self.inputs,))
        loss = F.cross_entropy(logits, self.labels)
        return self.flatten(torch.autograd.grad(loss, shifted)).detach()

    def top_eigenpairs(self, count: int, max_iterations: int, tolerance: float, seed: int
                       ) -> tuple[list[float], list[torch.Tensor]]:
        """PyHessian's power iteration with deflation: the `count` largest-|mu| eigenvalues and vectors."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            values, vectors = self.engine.eigenvalues(maxIter=max_iterations, tol=tolerance, top_n=count)
        return [float(value) for value in values], [self.flatten(vector).detach() for vector in vectors]


@contextmanager
def prunable_hessian(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> Iterator[HessianOperator]:
    """PyHessian's `hessian` on (inputs, labels) over the prunable weights only, model in eval mode."""
    was_training = model.training
    prunable = prunable_parameters(model)
    prunable_ids = {id(weight) for weight in prunable.values()}
    frozen = [param for param in model.parameters() if param.requires_grad and id(param) not in prunable_ids]
    names_by_id = {id(param): name for name, param in model.named_parameters()}
    for param in frozen:
        param.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    try:
        with warnings.catch_warnings():  # PyHessian's backward(create_graph=True); we drop .grad afterwards
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            engine = PyHessian(model, nn.CrossEntropyLoss(), data=(inputs, labels), cuda=inputs.device.type == "cuda")
        names = [names_by_id[id(param)] for param in engine.params]
        yield HessianOperator(engine, model, names, inputs, labels)
    finally:
        for param in frozen:
            param.requires_grad_(True)
        model.zero_grad(set_to_none=True)  # drops the .grad that holds PyHessian's graph
        model.train(was_training)


# --- stochastic Lanczos quadrature --------------------------------------------------------------


@dataclass
class Spectrum:
    """A spectral measure: nodes mu_j (descending) with weights w_j summing to 1."""

    nodes: list[float]
    weights: list[float]
    runs: int
    steps: int

    def fraction_above(self, threshold: float) -> float:
        """Share of the eigenvalues above `threshold` (un-broadened: sum of the weights of nodes above)."""
        return float(sum(weight for node, weight in zip(self.nodes, self.weights, strict=True) if node > threshold))

    @classmethod
    def exact(cls, eigenvalues: torch.Tensor) -> Spectrum:
        """The exact spectral measure of a matrix: every eigenvalue with weight 1/d."""
        nodes = torch.sort(eigenvalues.double(), descending=True).values.tolist()
        return cls(nodes=nodes, weights=[1.0 / len(nodes)] * len(nodes), runs=1, steps=len(nodes))


def lanczos(operator: HessianOperator, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One Lanczos run with full reorthogonalisation; returns (Ritz values, quadrature weights)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 2, (operator.dimension,), generator=generator).to(operator.dtype) * 2 - 1
    vector = (start / start.norm()).to(operator.device)
    steps = min(steps, operator.dimension)
    basis = torch.zeros(steps, operator.dimension, dtype=operator.dtype, device=operator.device)
    alphas: list[float] = []
    betas: list[float] = []
    for step in range(steps):
        basis[step] = vector
        residual = operator.hvp(vector)
        alpha = torch.dot(residual, vector)
        alphas.append(float(alpha))
        residual = residual - alpha * vector
        if step > 0:
            residual = residual - betas[-1] * basis[step - 1]
        done = basis[: step + 1]
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            residual = residual - done.T @ (done @ residual)
        beta = float(residual.norm())
        if step == steps - 1 or beta < BREAKDOWN_TOLERANCE * max(abs(value) for value in alphas):
            break
        betas.append(beta)
        vector = residual / beta
    size = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if size > 1:
        off = torch.tensor(betas[: size - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    return values, vectors[0] ** 2


def slq(operator: HessianOperator, runs: int, steps: int, seed: int) -> Spectrum:
    """Stochastic Lanczos quadrature: the nodes and weights of `runs` Lanczos runs, pooled."""
    nodes, weights = [], []
    for run in range(runs):
        values, run_weights = lanczos(operator, steps, derive_seed(seed, "lanczos", run))
        nodes.append(values)
        weights.append(run_weights / runs)
    all_nodes, all_weights = torch.cat(nodes), torch.cat(weights)
    order = torch.argsort(all_nodes, descending=True, stable=True)
    return Spectrum(nodes=all_nodes[order].tolist(), weights=all_weights[order].tolist(), runs=runs, steps=steps)


# --- the nonlinear remainder F and its Lipschitz constant ---------------------------------------


def remainder(operator: HessianOperator, shift: torch.Tensor) -> torch.Tensor:
    """F(U) = -grad L(W+U) + grad L(W) + H U: what the linearisation of the gradient flow leaves out."""
    return -operator.gradient_at(shift) + operator.gradient + operator.hvp(shift)


@dataclass
class LipschitzEstimate:
    """K(p, Delta): the largest secant ratio over `samples` random pairs, with every ratio kept."""

    value: float
    p: float
    delta: float
    ratios: list[float]


def random_shift(operator: HessianOperator, p: float, delta: float, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian direction over the prunable weights scaled to ||U||_p = delta."""
    direction = torch.randn(operator.dimension, generator=generator, dtype=torch.float64)
    direction = direction * (delta / torch.linalg.vector_norm(direction, ord=p))
    return direction.to(device=operator.device, dtype=operator.dtype)


def lipschitz_estimate(operator: HessianOperator, p: float, delta: float, samples: int, seed: int) -> LipschitzEstimate:
    """Secant estimate of the Lipschitz constant of F on the p-sphere of radius delta around W."""
    generator = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(samples):
        first, second = (random_shift(operator, p, delta, generator) for _ in range(2))
        difference = remainder(operator, first) - remainder(operator, second)
        ratios.append(float(torch.linalg.vector_norm(difference.double(), ord=p)
                            / torch.linalg.vector_norm((first - second).double(), ord=p)))
    return LipschitzEstimate(value=max(ratios), p=p, delta=delta, ratios=ratios)


# --- the gap rule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapRule:
    """The admissibility conditions of a split (spec step 4)."""

    lipschitz: float
    gap_resolution: float
    max_sparsity: float
    spectrum_count: str = "mass"

    def __post_init__(self) -> None:
        if self.spectrum_count not in SPECTRUM_COUNTS:
            raise BenchError(f"spectrum_count {self.spectrum_count!r} is unknown; accepted: {', '.join(SPECTRUM_COUNTS)}")


@dataclass
class Split:
    """The chosen split of the spectrum; `sparsity` is s* (0 when no gap is admissible)."""

    sparsity: float
    spectrum_count: str
    index: int | None = None  # the split lies after node `index` (nodes in descending order)
    upper: float | None = None  # mu_j, the lowest node above the split (the fast side's edge)
    lower: float | None = None  # mu_{j+1}, the highest node below it (the slow side's edge)
    gap: float | None = None
    four_k: float = 0.0
    resolution_threshold: float = 0.0
    fraction_mass: float = 0.0
    fraction_nodes: float = 0.0
    admissible_splits: int = 0
    reason: str = ""

    @property
    def threshold(self) -> float | None:
        """The midpoint of the chosen gap (an eigenvalue level separating W- from W+)."""
        return None if self.index is None else 0.5 * (self.upper + self.lower)

    def as_dict(self) -> dict:
        return asdict(self) | {"threshold": self.threshold}


def choose_split(spectrum: Spectrum, rule: GapRule) -> Split:
    """Among the admissible gaps, the one with the largest fraction of the spectrum above it."""
    nodes = torch.tensor(spectrum.nodes, dtype=torch.float64)
    weights = torch.tensor(spectrum.weights, dtype=torch.float64)
    four_k = 4.0 * rule.lipschitz
    resolution = rule.gap_resolution * float(nodes.max() - nodes.min()) if nodes.numel() else 0.0
    empty = Split(sparsity=0.0, spectrum_count=rule.spectrum_count, four_k=four_k, resolution_threshold=resolution,
                  reason="no spectral gap")
    if nodes.numel() < 2:
        return empty
    gaps = nodes[:-1] - nodes[1:]
    mass_above = torch.cumsum(weights, 0)[:-1] / weights.sum()
    nodes_above = torch.arange(1, nodes.numel(), dtype=torch.float64) / nodes.numel()
    fractions = mass_above if rule.spectrum_count == "mass" else nodes_above
    admissible = (gaps > four_k) & (gaps > resolution) & (nodes[1:] >= 0) & (fractions <= rule.max_sparsity)
    candidates = torch.nonzero(admissible).flatten()
    if candidates.numel() == 0:
        return empty
    index = int(candidates[-1])  # fractions grow with the index: the last admissible split is the largest
    return Split(
        sparsity=float(fractions[index]), spectrum_count=rule.spectrum_count, index=index,
        upper=float(nodes[index]), lower=float(nodes[index + 1]), gap=float(gaps[index]), four_k=four_k,
        resolution_threshold=resolution, fraction_mass=float(mass_above[index]),
        fraction_nodes=float(nodes_above[index]), admissible_splits=int(candidates.numel()),
        reason="largest admissible fraction",
    )
