"""IMC's numerical core (`methods/spectrum.py`) against exact answers on models small enough to solve.

The exact Hessian of small MLPs on digits (tanh or ReLU, up to 1,776 prunable weights) comes from
`torch.autograd.functional.hessian` and `torch.linalg.eigh`; SLQ over PyHessian's HVPs, PyHessian's
top eigenvalues, the Ritz top eigenvalues, the exact count of eigenvalues above a gap, the gap rule and
K's diagnostics (||H(W+U) - H(W)||, ReLU sign flips) must agree with it. The gap rule is also checked on
synthetic spectra with known gaps, and F(U) must be second order in U.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from bench.errors import BenchError
from bench.masks import prunable_parameters
from methods.spectrum import (
    GapRule,
    ReluSigns,
    SecantOperators,
    Spectrum,
    choose_split,
    device_scope,
    hessian_change,
    lanczos,
    lipschitz_estimate,
    prunable_hessian,
    random_shift,
    remainder,
    slq,
)


class ReluMLP(nn.Module):
    """64 -> hidden -> 10 with a functional ReLU, as prunebench's ResNets call it."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden, self.out = nn.Linear(64, hidden), nn.Linear(hidden, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(inputs)))


def trained_mlp(hidden: int, dtype: torch.dtype = torch.float32, steps: int = 200, activation: str = "tanh"):
    """An MLP (with biases, which the Hessian must leave out) trained full-batch on 256 digits."""
    digits = load_digits()
    inputs = torch.tensor(digits.data[:256], dtype=dtype) / 16
    labels = torch.tensor(digits.target[:256])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)) if activation == "tanh" \
        else ReluMLP(hidden)
    model = model.to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model, inputs, labels


def exact_hessian(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                  shift: torch.Tensor | None = None) -> torch.Tensor:
    """The loss Hessian over the prunable weights at W (+ shift), by autograd, in float64."""
    weights = prunable_parameters(model)
    shapes = [weight.shape for weight in weights.values()]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = flat.split([shape.numel() for shape in shapes])
        params = {name: piece.reshape(shape) for name, piece, shape in zip(weights, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (inputs,)), labels)

    flat = torch.cat([weight.detach().reshape(-1) for weight in weights.values()])
    if shift is not None:
        flat = flat + shift
    return torch.autograd.functional.hessian(loss, flat, vectorize=True).double()


def exact_eigenvalues(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the loss Hessian over the prunable weights, by autograd and eigh (ascending)."""
    return torch.linalg.eigh(exact_hessian(model, inputs, labels)).eigenvalues


@pytest.fixture(scope="module")
def mlp_problem():
    model, inputs, labels = trained_mlp(hidden=24)
    return model, inputs, labels, exact_eigenvalues(model, inputs, labels)


def test_slq_gap_rule_and_top_eigenvalues_match_the_exact_spectrum(mlp_problem):
    model, inputs, labels, eigenvalues = mlp_problem
    with prunable_hessian(model, inputs, labels) as operator:
        assert operator.dimension == 64 * 24 + 24 * 10 == eigenvalues.numel()  # biases left out
        spectrum = slq(operator, runs=8, steps=100, seed=0)
        top, _ = operator.top_eigenpairs(4, max_iterations=200, tolerance=1e-6, seed=0)
        lipschitz = lipschitz_estimate(operator, p=2.0, delta=0.01, samples=4, seed=0).value
    assert model.training and all(param.grad is None for param in model.parameters())
    assert all(param.requires_grad for param in model.parameters())
    assert sum(spectrum.weights) == pytest.approx(1.0, abs=1e-9)
    exact_top = eigenvalues.flip(0)[:4]
    assert torch.allclose(torch.tensor(top, dtype=torch.float64), exact_top, rtol=0.01)
    # a resolution fine enough that the chosen gap lies well inside the spectrum (1-2% above it)
    rule = GapRule(lipschitz=lipschitz, gap_resolution=0.003, max_sparsity=0.95, spectrum_count="mass")
    exact = choose_split(Spectrum.exact(eigenvalues), rule)
    found = choose_split(spectrum, rule)
    assert exact.sparsity > 0.005 and found.index is not None
    assert found.upper == pytest.approx(exact.upper, rel=0.01)
    assert found.lower == pytest.approx(exact.lower, rel=0.01)
    assert abs(found.sparsity - exact.sparsity) < 0.02
    exact_fraction = float((eigenvalues > exact.threshold).double().mean())
    assert abs(spectrum.fraction_above(exact.threshold) - exact_fraction) < 0.02


def test_exact_count_top_ritz_values_and_early_stop_match_the_exact_spectrum():
    model, inputs, labels = trained_mlp(hidden=24, dtype=torch.float64)  # 1,776 weights, float64
    eigenvalues = exact_eigenvalues(model, inputs, labels).flip(0)
    with prunable_hessian(model, inputs, labels) as operator:
        lipschitz = lipschitz_estimate(operator, p=2.0, delta=0.01, samples=2, seed=0).value
        rule = GapRule(lipschitz, gap_resolution=0.01, max_sparsity=0.95, spectrum_count="count")
        readings = []
        spectrum = slq(operator, runs=8, steps=100, seed=0,
                       settled=lambda pooled: readings.append(choose_split(pooled, rule).sparsity) or readings[-1])
        everything = slq(operator, runs=8, steps=100, seed=0)
    assert spectrum.dimension == eigenvalues.numel() == 1776
    # stopped at the first run whose pooled split gives the s* of the runs before it, never earlier
    assert 2 <= spectrum.runs < 8 and len(readings) == spectrum.runs
    assert readings[-1] == readings[-2] and all(a != b for a, b in zip(readings[:-2], readings[1:-1], strict=True))
    assert everything.runs == 8 and choose_split(everything, rule).sparsity == readings[-1]
    # the top eigenvalues are SLQ's largest Ritz values, exact without any power iteration
    top, residuals = spectrum.top_ritz(5)
    assert torch.allclose(torch.tensor(top, dtype=torch.float64), eigenvalues[:5], rtol=1e-8)
    assert max(residuals) < 1e-6
    split = choose_split(spectrum, rule)
    exact_k = int((eigenvalues > split.threshold).sum())
    assert split.decided_by == "count" and split.reason == "largest admissible fraction"
    assert exact_k >= 5 and split.count == exact_k and set(split.count_runs) == {exact_k}
    assert split.sparsity == pytest.approx(exact_k / 1776)
    # the case the count is for: the mass above the same split misses k by over 15%
    assert abs(split.fraction_mass * 1776 - exact_k) > 0.15 * exact_k
    # a split inside the bulk, where Ritz values have not converged, falls back to mass and says so
    bulk = choose_split(spectrum, GapRule(0.0, gap_resolution=0.0, max_sparsity=0.95, spectrum_count="count"))
    assert bulk.decided_by == "mass" and bulk.count is None and "not converged" in bulk.reason
    assert bulk.sparsity == bulk.fraction_mass


def test_lipschitz_diagnostics_match_the_exact_hessian_change_and_relu_flips():
    model, inputs, labels = trained_mlp(hidden=6, dtype=torch.float64, steps=100, activation="relu")  # 444 weights
    with prunable_hessian(model, inputs, labels) as operator:
        shift = random_shift(operator, 2.0, 0.5, torch.Generator().manual_seed(3))
        change = hessian_change(operator, shift, iterations=60, seed=0)
        few = hessian_change(operator, shift, iterations=5, seed=0)
        signs = ReluSigns(operator.relu_signs_at(torch.zeros_like(shift)))
        operator.gradient_at(shift, signs)
        estimate = lipschitz_estimate(operator, p=2.0, delta=0.5, samples=3, seed=0, hessian_change_iterations=5)
    exact_change = torch.linalg.matrix_norm(exact_hessian(model, inputs, labels, shift)
                                            - exact_hessian(model, inputs, labels), ord=2)
    assert change == pytest.approx(float(exact_change), rel=0.02)
    assert 0.3 * float(exact_change) < few <= float(exact_change) * (1 + 1e-9)  # a lower bound after 5 steps
    first = prunable_parameters(model)["hidden.weight"].detach()
    with torch.no_grad():
        before = model.hidden(inputs) > 0
        after = F.linear(inputs, first + shift[: first.numel()].reshape(first.shape), model.hidden.bias) > 0
    assert signs.flip_share == pytest.approx(float((before != after).double().mean()))
    assert 0.0 < signs.flip_share < 0.5
    assert estimate.dtype == "torch.float64" and len(estimate.relu_flip_shares) == 3
    assert estimate.hessian_change > 0 and 0.0 < estimate.relu_flip_share < 1.0
    assert estimate.relu_flip_share == estimate.relu_flip_shares[estimate.ratios.index(estimate.value)]


def test_float32_secants_inflate_k_at_small_delta_and_auto_takes_float64_there():
    model, inputs, labels = trained_mlp(hidden=8, steps=50)  # float32
    k, auto = {}, {}
    with SecantOperators(model, inputs, labels, "auto") as operators:
        for dtype in (torch.float32, torch.float64):
            k[dtype] = lipschitz_estimate(operators.operator(dtype), p=2.0, delta=1e-4, samples=2, seed=0).value
        for delta in (1e-4, 0.5):
            auto[delta] = operators.estimate(p=2.0, delta=delta, samples=2, seed=0, hessian_change_iterations=0)
    assert k[torch.float32] > 20 * k[torch.float64]  # rounding, not curvature
    assert auto[1e-4].dtype == "torch.float64" and auto[1e-4].float32_rounding_share > 0.01
    assert auto[1e-4].value == pytest.approx(k[torch.float64], rel=1e-9)
    assert auto[0.5].dtype == "torch.float32" and auto[0.5].float32_rounding_share < 0.01
    assert model[0].weight.dtype == torch.float32  # the float64 copy left the model as it was


def test_device_scope_makes_the_job_device_current():
    scope = device_scope(torch.device("cuda", 1))  # not entered: no GPU needed
    assert isinstance(scope, torch.cuda.device) and scope.idx == 1
    assert not isinstance(device_scope(torch.device("cpu")), torch.cuda.device)
    model, inputs, labels = trained_mlp(hidden=2, steps=1)
    with prunable_hessian(model, inputs, labels) as operator:
        assert operator.engine.device == "cpu" and operator.device == inputs.device
        assert operator.hvp(torch.ones(operator.dimension)).device == inputs.device


def test_lanczos_with_as_many_steps_as_dimensions_is_exact():
    model, inputs, labels = trained_mlp(hidden=2, dtype=torch.float64, steps=50)  # 148 weights
    eigenvalues = exact_eigenvalues(model, inputs, labels)
    with prunable_hessian(model, inputs, labels) as operator:
        run = lanczos(operator, steps=operator.dimension, seed=1)
    nodes, weights = run.values, run.weights
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-9)
    # every Ritz value is an eigenvalue, and the extreme ones are found
    distance = (nodes[:, None] - eigenvalues[None, :]).abs().min(dim=1).values
    assert distance.max().item() < 1e-6 * eigenvalues.abs().max().item()
    assert nodes.max().item() == pytest.approx(eigenvalues.max().item(), rel=1e-8)
    assert nodes.min().item() == pytest.approx(eigenvalues.min().item(), rel=1e-6, abs=1e-8)


def test_remainder_is_second_order():
    model, inputs, labels = trained_mlp(hidden=8, dtype=torch.float64, steps=50)
    with prunable_hessian(model, inputs, labels) as operator:
        direction = torch.randn(operator.dimension, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        direction /= direction.norm()
        assert remainder(operator, torch.zeros_like(direction)).norm().item() < 1e-12
        ratios = [float(remainder(operator, scale * direction).norm() / scale**2) for scale in (1e-1, 1e-2, 1e-3)]
        first_order = [float(remainder(operator, scale * direction).norm() / scale) for scale in (1e-1, 1e-3)]
    assert ratios[0] > 1e-4  # F is not identically zero: the ratio is a real curvature change
    assert max(ratios) / min(ratios) < 2.0  # bounded as ||U|| shrinks 10x and 100x
    assert first_order[1] < first_order[0] / 50  # ||F(U)|| / ||U|| -> 0: no first-order term left


# --- the gap rule on synthetic spectra -------------------------------------------------------------

# gaps (descending): 0.2, 3.8 | 0.1, 3.9 | 0.05, 0.05, 1.8 | 0.05, 0.05, 0.05, 2.95 (below zero)
NODES = [10.0, 9.8, 6.0, 5.9, 2.0, 1.95, 1.9, 0.1, 0.05, 0.0, -0.05, -3.0]


def split_of(nodes=NODES, weights=None, lipschitz=0.01, resolution=0.01, max_sparsity=0.95, count="mass"):
    weights = weights or [1.0 / len(nodes)] * len(nodes)
    spectrum = Spectrum(nodes=nodes, weights=weights, runs=1, steps=len(nodes))
    return choose_split(spectrum, GapRule(lipschitz, resolution, max_sparsity, count))


def test_gap_rule_takes_the_admissible_gap_with_the_largest_fraction():
    split = split_of()
    assert split.sparsity == pytest.approx(7 / 12) and (split.upper, split.lower) == (1.9, 0.1)
    assert split.admissible_splits == 4  # 10|9.8, 9.8|6, 5.9|2, 1.9|0.1; never -0.05|-3 (below zero)


def test_gap_rule_four_k_condition():
    assert split_of(lipschitz=0.44).sparsity == pytest.approx(7 / 12)  # 4K = 1.76 < 1.8
    assert split_of(lipschitz=0.46).sparsity == pytest.approx(4 / 12)  # 4K = 1.84 > 1.8
    assert split_of(lipschitz=0.96).sparsity == pytest.approx(4 / 12)  # 4K = 3.84: 3.8 fails, 3.9 holds
    assert split_of(lipschitz=0.98).sparsity == 0.0


def test_gap_rule_resolution_threshold():
    # range 13: 0.13 x 13 = 1.69 < 1.8; 0.15 x 13 = 1.95 > 1.8; 0.31 x 13 = 4.03 > 3.9
    assert split_of(resolution=0.13).sparsity == pytest.approx(7 / 12)
    assert split_of(resolution=0.15).sparsity == pytest.approx(4 / 12)
    assert split_of(resolution=0.31).sparsity == 0.0


def test_gap_rule_max_sparsity_is_a_constraint_not_a_cap():
    split = split_of(max_sparsity=0.5)
    assert split.sparsity == pytest.approx(4 / 12) and split.lower == 2.0
    assert split_of(max_sparsity=0.1).sparsity == pytest.approx(1 / 12)
    assert split_of(max_sparsity=0.05).sparsity == 0.0


def test_no_admissible_gap_gives_zero_not_an_exception():
    split = split_of(nodes=[0.3, 0.2, 0.1, 0.0, -5.0, -10.0])  # the only big gaps are below zero
    assert split.sparsity == 0.0 and split.index is None and split.reason == "no spectral gap"
    assert split_of(nodes=[1.0]).sparsity == 0.0


def test_mass_and_nodes_readings():
    weights = [0.01] * 7 + [0.93 / 5] * 5  # the 7 nodes above the split carry 7% of the mass
    assert split_of(weights=weights, count="mass").sparsity == pytest.approx(0.07)
    assert split_of(weights=weights, count="nodes").sparsity == pytest.approx(7 / 12)
    assert split_of(weights=weights, count="mass", max_sparsity=0.5).lower == 0.1  # 0.07 <= 0.5
    with pytest.raises(BenchError, match="accepted: count, mass, nodes"):
        split_of(count="weights")


def test_count_without_ritz_values_falls_back_to_mass_and_unsorted_nodes_are_refused():
    assert split_of(count="count").decided_by == "mass"  # a spectrum without runs' Ritz values
    exact = choose_split(Spectrum.exact(torch.tensor(NODES)), GapRule(0.01, 0.01, 0.95, "count"))
    assert exact.decided_by == "count" and exact.count == 7 and exact.sparsity == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="descending"):
        split_of(nodes=list(reversed(NODES)))
