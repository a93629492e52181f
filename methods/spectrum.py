"""The loss Hessian over the prunable weights, its spectrum, the Lipschitz estimate of F, and IMC's gap rule.

Follows `../shared/specs/imc.md` (steps 2-4) and `../shared/specs/lth-cs-pyhessian.md` (sections 3-4);
the theory is Theorem 5 of the IMC paper's supplement (`../shared/paper/imc-supplementary.txt`).

- `prunable_hessian(model, inputs, labels)`: PyHessian's `pyhessian.hessian` (PyPI 0.1) on one fixed
  batch, restricted to the prunable weights (every other parameter is frozen while it is built, so
  PyHessian's `get_params_grad` sees only them; BN and biases are held fixed), model in eval mode.
  `zero_grad(set_to_none=True)` before, `.grad` dropped and train mode restored after. PyHessian
  moves data with `.cuda()` (the *current* CUDA device), so every PyHessian call runs inside
  `device_scope(device)`: a job on `cuda:1` stays on `cuda:1`. The `HessianOperator` it yields
  works on flat vectors: `hvp` (PyHessian's `hessian_vector_product`), `gradient_at(U)` (the loss
  gradient at W + U, through `torch.func.functional_call`, so the weights PyHessian's graph holds
  are never modified in place), `shifted_hvp(U, v)` (H(W + U) v, the same way) and `top_eigenpairs`
  (PyHessian's power iteration `eigenvalues(top_n)`).
- `slq`: stochastic Lanczos quadrature written here, because PyHessian 0.1's `density()` calls the
  removed `torch.eig`. Like PyHessian: a normalised Rademacher start vector per run, full
  reorthogonalisation against every earlier Lanczos vector, the tridiagonal T diagonalised (here by
  `torch.linalg.eigh` in float64); nodes = Ritz values, weights = squared first components of T's
  eigenvectors, averaged over runs (they sum to 1). Silent in PyHessian and named here: Lanczos stops
  early when the residual norm beta falls below `BREAKDOWN_TOLERANCE` times the largest |alpha| (an
  invariant subspace: the quadrature is then exact), and the steps are capped at the dimension d.
  Each Ritz value keeps its residual bound beta_m |s_mj| (||H y - theta y|| for its Ritz vector y:
  an eigenvalue of H lies within it). With `settled` (a function of the pooled spectrum, e.g. IMC's
  split and the s* it gives), runs stop once two consecutive pooled spectra give the same value: the
  count above the split is then settled, and more runs would only refine the `mass` reading.
- `remainder_difference` and `lipschitz_estimate`: F(U) = -grad L(W+U) + grad L(W) + H U and the
  secant estimate K = max over random pairs (U_a, U_b) with ||U||_p = Delta of
  ||F(U_a) - F(U_b)||_p / ||U_a - U_b||_p; a pair costs two gradients and one HVP (grad L(W) cancels).
  The random directions are Gaussian, scaled to p-norm Delta (the paper names p and Delta but not the
  sampling; this is our choice). Beside K, what it measures: at the pair that gives K, the spectral
  norm of H(W+U) - H(W) (a few power iterations, the largest over the pair's two points; the
  Jacobian of F is H(W) - H(W+U)), and per pair the share of ReLU units (pre-activations over the
  sample) whose sign differs between W and W+U (`ReluSigns`, a `TorchFunctionMode` that sees every
  `relu` call of the forward).
- `choose_split`: the gap rule of the spec's step 4 on a spectral measure (nodes, weights), with three
  readings of "fraction of the spectrum": `count` (k / d, k = the Ritz values above the split whose
  residual bound keeps them above it, the largest count over the runs; where a run has a Ritz value
  above the split that is not converged, e.g. a split inside the bulk, it falls back to `mass` and
  says so), `mass` (the quadrature weights above the split, an estimate of k / d) and `nodes` (the
  share of Lanczos nodes).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from bench.errors import BenchError
from bench.masks import prunable_parameters
from bench.seeds import derive_seed

BREAKDOWN_TOLERANCE = 1e-10
"""Lanczos stops when beta < this x max |alpha| (the Krylov space is invariant)."""
RITZ_TOLERANCE = 1e-3
"""A Ritz value has converged when its residual bound is at most this x the spread of its run's Ritz values."""
SPECTRUM_COUNTS = ("count", "mass", "nodes")
SECANT_DTYPES = ("auto", "float64", "float32")
ROUNDING_LIMIT = 0.01
"""`auto` computes the secants in float64 when float32 rounding would be more than this share of a secant."""
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)


def device_scope(device: torch.device) -> AbstractContextManager:
    """Make `device` the current CUDA device (PyHessian's `.cuda()` and `.to("cuda")` land there)."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class ReluSigns(TorchFunctionMode):
    """Inside it, every `relu` call records which of its inputs are positive; against `reference`
    (the signs of an earlier forward, call by call), it counts the units whose sign differs."""

    def __init__(self, reference: list[torch.Tensor] | None = None):
        super().__init__()
        self.reference = reference
        self.signs: list[torch.Tensor] = []  # kept only without a reference
        self.calls = 0
        self.flipped = 0
        self.units = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_FUNCTIONS:
            positive = args[0].detach() > 0
            if self.reference is None:
                self.signs.append(positive)
            else:
                self.flipped += int((positive != self.reference[self.calls]).sum())
            self.calls += 1
            self.units += positive.numel()
        return func(*args, **(kwargs or {}))

    @property
    def flip_share(self) -> float:
        return self.flipped / self.units if self.units else 0.0


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
        self.hvps = 0  # Hessian-vector products taken (at W and at shifted points)

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
        self.hvps += 1
        product = hessian_vector_product(self.engine.gradsH, self.params, self.unflatten(vector))
        return self.flatten(product).detach()

    def _shifted_gradient(self, shift: torch.Tensor, create_graph: bool, relu_signs: ReluSigns | None
                          ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
        shifted = [(param.detach() + piece).requires_grad_(True)
                   for param, piece in zip(self.params, self.unflatten(shift), strict=True)]
        with relu_signs if relu_signs is not None else nullcontext():
            logits = functional_call(self.model, dict(zip(self.names, shifted, strict=True)), (self.inputs,))
        loss = F.cross_entropy(logits, self.labels)
        return shifted, torch.autograd.grad(loss, shifted, create_graph=create_graph)

    def gradient_at(self, shift: torch.Tensor, relu_signs: ReluSigns | None = None) -> torch.Tensor:
        """grad L(W + shift) on the same batch, model in eval mode (W itself is not touched)."""
        return self.flatten(self._shifted_gradient(shift, False, relu_signs)[1]).detach()

    def relu_signs_at(self, shift: torch.Tensor) -> list[torch.Tensor]:
        """The sign of every ReLU input of the forward at W + shift."""
        recorder = ReluSigns()
        with torch.no_grad(), recorder:
            functional_call(self.model, dict(zip(self.names, [param.detach() + piece for param, piece in zip(
                self.params, self.unflatten(shift), strict=True)], strict=True)), (self.inputs,))
        return recorder.signs

    def shifted_hvp(self, shift: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> H(W + shift) v: one double-backward graph at the shifted point, reused for every v."""
        shifted, gradient = self._shifted_gradient(shift, True, None)

        def product(vector: torch.Tensor) -> torch.Tensor:
            self.hvps += 1
            pieces = torch.autograd.grad(gradient, shifted, self.unflatten(vector), retain_graph=True)
            return self.flatten(pieces).detach()

        return product

    def top_eigenpairs(self, count: int, max_iterations: int, tolerance: float, seed: int
                       ) -> tuple[list[float], list[torch.Tensor]]:
        """PyHessian's power iteration with deflation: the `count` largest-|mu| eigenvalues and vectors."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                device_scope(self.device):
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
        with warnings.catch_warnings(), device_scope(inputs.device):
            # PyHessian's backward(create_graph=True); we drop .grad afterwards
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
class LanczosRun:
    """One Lanczos run: Ritz values (ascending), their quadrature weights and residual bounds."""

    values: torch.Tensor
    weights: torch.Tensor
    residuals: torch.Tensor


@dataclass
class Spectrum:
    """A spectral measure: nodes mu_j (descending) with weights w_j summing to 1, and each run's Ritz
    values (descending) with their residual bounds, over a Hessian of `dimension` weights."""

    nodes: list[float]
    weights: list[float]
    runs: int
    steps: int
    dimension: int = 0
    ritz_values: list[list[float]] = field(default_factory=list)
    ritz_residuals: list[list[float]] = field(default_factory=list)

    def fraction_above(self, threshold: float) -> float:
        """Share of the eigenvalues above `threshold` (un-broadened: sum of the weights of nodes above)."""
        return float(sum(weight for node, weight in zip(self.nodes, self.weights, strict=True) if node > threshold))

    def certified_counts(self, threshold: float) -> list[int] | None:
        """Per run, the Ritz values above `threshold`; None when one of them may not be (theta - r <= t)."""
        counts = []
        for values, residuals in zip(self.ritz_values, self.ritz_residuals, strict=True):
            above = [(value, residual) for value, residual in zip(values, residuals, strict=True) if value > threshold]
            if any(value - residual <= threshold for value, residual in above):
                return None
            counts.append(len(above))
        return counts or None

    def top_ritz(self, count: int) -> tuple[list[float], list[float]] | None:
        """The `count` largest eigenvalues as the largest Ritz values over the runs (each a lower bound of
        its eigenvalue, by interlacing) with their residual bounds; None unless all of them converged."""
        if not self.ritz_values or count > min(len(values) for values in self.ritz_values):
            return None
        values, residuals = [], []
        for rank in range(count):
            best = max(range(len(self.ritz_values)), key=lambda run: self.ritz_values[run][rank])
            values.append(self.ritz_values[best][rank])
            residuals.append(self.ritz_residuals[best][rank])
        spread = max(values[0] - min(min(run) for run in self.ritz_values), 1e-30)
        return (values, residuals) if max(residuals) <= RITZ_TOLERANCE * spread else None

    @classmethod
    def exact(cls, eigenvalues: torch.Tensor) -> Spectrum:
        """The exact spectral measure of a matrix: every eigenvalue with weight 1/d (residuals 0)."""
        nodes = torch.sort(eigenvalues.double(), descending=True).values.tolist()
        return cls(nodes=nodes, weights=[1.0 / len(nodes)] * len(nodes), runs=1, steps=len(nodes),
                   dimension=len(nodes), ritz_values=[nodes], ritz_residuals=[[0.0] * len(nodes)])


def lanczos(operator: HessianOperator, steps: int, seed: int) -> LanczosRun:
    """One Lanczos run with full reorthogonalisation: Ritz values, quadrature weights, residual bounds."""
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
        betas.append(beta)
        if step == steps - 1 or beta < BREAKDOWN_TOLERANCE * max(abs(value) for value in alphas):
            break
        vector = residual / beta
    size = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if size > 1:
        off = torch.tensor(betas[: size - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    return LanczosRun(values=values, weights=vectors[0] ** 2, residuals=betas[-1] * vectors[-1].abs())


def slq(operator: HessianOperator, runs: int, steps: int, seed: int,
        settled: Callable[[Spectrum], Hashable] | None = None) -> Spectrum:
    """Stochastic Lanczos quadrature: the nodes and weights of up to `runs` Lanczos runs, pooled.

    With `settled`, it stops after the second run or later once `settled` of the runs so far equals
    `settled` of the runs before the last one.
    """
    done: list[LanczosRun] = []
    before: Hashable = None
    for run in range(runs):
        done.append(lanczos(operator, steps, derive_seed(seed, "lanczos", run)))
        spectrum = pooled_spectrum(done, steps, operator.dimension)
        if settled is not None:
            now = settled(spectrum)
            if len(done) >= 2 and now == before:
                break
            before = now
    return spectrum


def pooled_spectrum(done: list[LanczosRun], steps: int, dimension: int) -> Spectrum:
    """The spectral measure of Lanczos runs pooled: every run's nodes, each weight divided by the runs."""
    all_nodes = torch.cat([item.values for item in done])
    all_weights = torch.cat([item.weights for item in done]) / len(done)
    order = torch.argsort(all_nodes, descending=True, stable=True)
    return Spectrum(nodes=all_nodes[order].tolist(), weights=all_weights[order].tolist(), runs=len(done),
                    steps=steps, dimension=dimension,
                    ritz_values=[item.values.flip(0).tolist() for item in done],
                    ritz_residuals=[item.residuals.flip(0).tolist() for item in done])


# --- the nonlinear remainder F and its Lipschitz constant ---------------------------------------


def remainder_difference(operator: HessianOperator, first: torch.Tensor, second: torch.Tensor | None = None,
                         relu_signs: tuple[ReluSigns, ReluSigns] | None = None) -> torch.Tensor:
    """F(first) - F(second) = -grad L(W+first) + grad L(W+second) + H (first - second); grad L(W)
    cancels, so it costs two gradients and one HVP. `second` None is U = 0: F(first) itself (F(0) = 0)."""
    first_signs, second_signs = relu_signs or (None, None)
    if second is None:
        base, step = operator.gradient, first
    else:
        base, step = operator.gradient_at(second, second_signs), first - second
    return base - operator.gradient_at(first, first_signs) + operator.hvp(step)


def remainder(operator: HessianOperator, shift: torch.Tensor) -> torch.Tensor:
    """F(U) = -grad L(W+U) + grad L(W) + H U: what the linearisation of the gradient flow leaves out."""
    return remainder_difference(operator, shift)


def hessian_change(operator: HessianOperator, shift: torch.Tensor, iterations: int, seed: int) -> float:
    """||H(W + shift) - H(W)||_2 by `iterations` power iterations (a lower bound that tightens with them)."""
    shifted = operator.shifted_hvp(shift)
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(operator.dimension, generator=generator, dtype=torch.float64)
    vector = (vector / vector.norm()).to(device=operator.device, dtype=operator.dtype)
    norm = 0.0
    for _ in range(iterations):
        image = shifted(vector) - operator.hvp(vector)
        norm = float(image.norm())
        if norm == 0.0:
            break
        vector = image / norm
    return norm


@dataclass
class LipschitzEstimate:
    """K(p, Delta): the largest secant ratio over `samples` random pairs, with every ratio kept, and
    what K measures: at the pair that gives K, ||H(W+U) - H(W)||_2 (largest over its two points), and
    per pair the share of ReLU units whose sign flips between W and W+U (mean over its two points)."""

    value: float
    p: float
    delta: float
    ratios: list[float]
    dtype: str = ""
    hessian_change: float | None = None
    relu_flip_share: float | None = None
    relu_flip_shares: list[float] = field(default_factory=list)
    float32_rounding_share: float | None = None  # `auto`: float32 rounding / the secant it would blur
    diagnostics_s: float = 0.0


def random_shift(operator: HessianOperator, p: float, delta: float, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian direction over the prunable weights scaled to ||U||_p = delta."""
    direction = torch.randn(operator.dimension, generator=generator, dtype=torch.float64)
    direction = direction * (delta / torch.linalg.vector_norm(direction, ord=p))
    return direction.to(device=operator.device, dtype=operator.dtype)


def lipschitz_estimate(operator: HessianOperator, p: float, delta: float, samples: int, seed: int,
                       hessian_change_iterations: int = 0) -> LipschitzEstimate:
    """Secant estimate of the Lipschitz constant of F on the p-sphere of radius delta around W, in the
    operator's dtype, with its diagnostics (`hessian_change_iterations` 0: no Hessian change)."""
    generator = torch.Generator().manual_seed(seed)
    reference = operator.relu_signs_at(torch.zeros(operator.dimension, dtype=operator.dtype, device=operator.device))
    ratios, flip_shares, pairs = [], [], []
    for _ in range(samples):
        first, second = (random_shift(operator, p, delta, generator) for _ in range(2))
        signs = (ReluSigns(reference), ReluSigns(reference))
        difference = remainder_difference(operator, first, second, signs)
        ratios.append(float(torch.linalg.vector_norm(difference.double(), ord=p)
                            / torch.linalg.vector_norm((first - second).double(), ord=p)))
        flip_shares.append(0.5 * (signs[0].flip_share + signs[1].flip_share))
        pairs.append((first, second))
    best = max(range(samples), key=ratios.__getitem__)
    started = time.perf_counter()
    change = None
    if hessian_change_iterations:
        change = max(hessian_change(operator, shift, hessian_change_iterations, derive_seed(seed, "change", side))
                     for side, shift in enumerate(pairs[best]))
    return LipschitzEstimate(value=ratios[best], p=p, delta=delta, ratios=ratios, dtype=str(operator.dtype),
                             hessian_change=change, relu_flip_share=flip_shares[best] if reference else None,
                             relu_flip_shares=flip_shares if reference else [],
                             diagnostics_s=time.perf_counter() - started)


def float32_rounding_share(low: HessianOperator, high: HessianOperator, p: float, delta: float, seed: int) -> float:
    """How much of a secant numerator float32 rounding would be: 2 ||grad_32 L(W) - grad_64 L(W)||_p over
    ||F(U_a) - F(U_b)||_p for the first pair of `seed` (two gradients, each with that rounding)."""
    generator = torch.Generator().manual_seed(seed)
    first, second = (random_shift(low, p, delta, generator) for _ in range(2))
    numerator = float(torch.linalg.vector_norm(remainder_difference(low, first, second).double(), ord=p))
    noise = float(torch.linalg.vector_norm(low.gradient.double() - high.gradient.double(), ord=p))
    return 2.0 * noise / numerator if numerator > 0 else float("inf")


class SecantOperators:
    """The Hessian operators K is estimated on, for one model and sample: in the model's dtype and a
    float64 copy, each built when first needed (`with SecantOperators(...) as operators`)."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, dtype: str):
        if dtype not in SECANT_DTYPES:
            raise BenchError(f"secant dtype {dtype!r} is unknown; accepted: {', '.join(SECANT_DTYPES)}")
        self.model, self.inputs, self.labels, self.dtype = model, inputs, labels, dtype
        self.own_dtype = next(model.parameters()).dtype
        self.stack = ExitStack()
        self.operators: dict[torch.dtype, HessianOperator] = {}

    def __enter__(self) -> SecantOperators:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()

    def operator(self, dtype: torch.dtype) -> HessianOperator:
        if dtype not in self.operators:
            model = self.model if dtype == self.own_dtype else copy.deepcopy(self.model).to(dtype)
            self.operators[dtype] = self.stack.enter_context(
                prunable_hessian(model, self.inputs.to(dtype), self.labels))
        return self.operators[dtype]

    def hvps(self) -> int:
        return sum(operator.hvps for operator in self.operators.values())

    def estimate(self, p: float, delta: float, samples: int, seed: int, hessian_change_iterations: int
                 ) -> LipschitzEstimate:
        """K(p, Delta) in float64, in the model's dtype, or (`auto`) in the model's dtype unless its
        rounding would exceed `ROUNDING_LIMIT` of a secant (small Delta), then in float64."""
        own, share = self.own_dtype, None
        if self.dtype == "float64" or (self.dtype == "auto" and own == torch.float64):
            chosen = torch.float64
        elif self.dtype == "float32":
            chosen = torch.float32
        else:
            share = float32_rounding_share(self.operator(own), self.operator(torch.float64), p, delta, seed)
            chosen = torch.float64 if share > ROUNDING_LIMIT else own
        estimate = lipschitz_estimate(self.operator(chosen), p, delta, samples, seed, hessian_change_iterations)
        estimate.float32_rounding_share = share
        return estimate


# --- the gap rule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapRule:
    """The admissibility conditions of a split (spec step 4)."""

    lipschitz: float
    gap_resolution: float
    max_sparsity: float
    spectrum_count: str = "count"

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
    count: int | None = None  # converged Ritz values above the split (largest over the runs), if certified
    count_runs: list[int] | None = None  # that count in each run
    decided_by: str = ""  # the reading s* was taken from: count, mass, nodes, or "no gap" (s* = 0)
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
    if nodes.numel() > 1 and bool((nodes[1:] > nodes[:-1]).any()):
        raise ValueError("choose_split needs the spectrum's nodes in descending order")
    four_k = 4.0 * rule.lipschitz
    resolution = rule.gap_resolution * float(nodes.max() - nodes.min()) if nodes.numel() else 0.0
    empty = Split(sparsity=0.0, spectrum_count=rule.spectrum_count, four_k=four_k, resolution_threshold=resolution,
                  decided_by="no gap", reason="no spectral gap")
    if nodes.numel() < 2:
        return empty
    gaps = nodes[:-1] - nodes[1:]
    mass_above = torch.cumsum(weights, 0)[:-1] / weights.sum()
    nodes_above = torch.arange(1, nodes.numel(), dtype=torch.float64) / nodes.numel()
    gapped = torch.nonzero((gaps > four_k) & (gaps > resolution) & (nodes[1:] >= 0)).flatten().tolist()
    readings = {}  # split index -> (fraction, decided_by, counts per run)
    for index in gapped:
        counts = spectrum.certified_counts(0.5 * float(nodes[index] + nodes[index + 1]))
        if rule.spectrum_count == "nodes":
            readings[index] = (float(nodes_above[index]), "nodes", counts)
        elif rule.spectrum_count == "count" and counts is not None and spectrum.dimension:
            readings[index] = (max(counts) / spectrum.dimension, "count", counts)
        else:
            readings[index] = (float(mass_above[index]), "mass", counts)
    candidates = [index for index in gapped if readings[index][0] <= rule.max_sparsity]
    if not candidates:
        return empty
    index = candidates[-1]  # fractions grow with the index: the last admissible split is the largest
    fraction, decided_by, counts = readings[index]
    return Split(
        sparsity=fraction, spectrum_count=rule.spectrum_count, index=index,
        upper=float(nodes[index]), lower=float(nodes[index + 1]), gap=float(gaps[index]), four_k=four_k,
        resolution_threshold=resolution, fraction_mass=float(mass_above[index]),
        fraction_nodes=float(nodes_above[index]), count=None if counts is None else max(counts),
        count_runs=counts, decided_by=decided_by, admissible_splits=len(candidates),
        reason="largest admissible fraction" if decided_by == rule.spectrum_count else
        "largest admissible fraction; Ritz values above the split not converged: mass decided",
    )
