"""`continuous-sparsification`: Continuous Sparsification (Savarese, Silva & Maire, NeurIPS 2020).

Follows lolemacs/continuous-sparsification (`models/layers.py SoftMaskedConv2d`, `models/networks.py
MaskedNet`, `main.py`): every prunable weight w gets a mask score s, initialised to s0 (0); the search
trains the net with w * m, m = sigmoid(beta * s) / sigmoid(s0), and the loss CE + lambda * sum(m)
(lambda = 1e-8); weights and scores have their own SGD (momentum 0.9, Nesterov, same lr; weight decay
1e-4 on weights only); each round starts at beta = 1 and multiplies it every epoch so that it reaches
beta_T = 200 in the round's last epoch, with the lr schedule restarted (drops x0.1 at 56/85 and 71/85
of the round, the official 56 and 71 of 85) and the optimizer states kept; between rounds the scores
are reset to s <- min(beta_T * s, s0). The full state after epoch `rewind_epoch` (2) of round 0 is kept;
the ticket 1[s > 0] is then trained from that state with the recipe (new optimizer, schedule from 0).

Our choices and deviations (binding spec): the search is 2 rounds of half the recipe's epochs (80 + 80,
then a 160-epoch ticket: 320 epochs, as the paper's tables) instead of 3 x 85 + 85; the reset multiplies
by beta_T (the evident intent; the official code multiplies by the already-reset temperature 1, i.e.
s <- min(s, s0)); every prunable weight is masked (the official code leaves the 1x1 shortcuts and the
classifier dense); the ticket mask is binary 1[s > 0] without the official 1/sigmoid(s0) scale (2 for
s0 = 0; prunebench's masks are 0/1). Given a requested sparsity p, the ticket keeps the global top
(1 - p) of s instead ("forced"); both the sparsity the search reached by itself (`found_sparsity`) and
the one trained (`achieved_sparsity`) are recorded. A `rewind_epoch` past the first round (short smoke
runs) is capped at the round's length (`rewind_epoch_used` in the record).

The search does not depend on the requested sparsity: it is one shared stage (`bench.stages`) per
(dataset, arch, trial, recipe, CS settings), computed by the first job that needs it and read by
every level; it checkpoints after every epoch in its stage folder (`bench.train.write_checkpoint`:
checksummed, the one before kept as the fallback) and keeps the rewind state there (checksummed).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call
from torch.nn import functional as F

from bench.atomic import load_checked, save_checked
from bench.job_context import JobContext
from bench.masks import Masks, global_mask, prunable_parameters
from bench.spec import JobSpec
from bench.stages import StageNeed, StageSpec, load_value, recipe_key
from bench.train import TrainSettings, autocast, load_latest_checkpoint, write_checkpoint
from methods.base import Method, PlannedPhase
from methods.registry import register

SEARCH_STAGE = "cs-search"
SEARCH_VERSION = 1
"""Bump when the search's computation changes (old search folders are then not reused)."""
SEARCH_CHECKPOINT = "search.pt"
REWIND_STATE = "rewind_state.pt"


@dataclass(frozen=True)
class ContinuousSparsificationSettings:
    mask_initial_value: float = field(default=0.0, metadata={"help": "s0, the initial mask score (official 0)"})
    lmbda: float = field(default=1e-8, metadata={"help": "weight of the sum of soft masks in the loss"})
    final_temperature: float = field(default=200.0, metadata={"help": "beta_T, reached in each round's last epoch"})
    rounds: int = field(default=2, metadata={"help": "search rounds (official 3; our choice 2)", "minimum": 1})
    round_epochs: int = field(default=0, metadata={"help": "epochs per search round; 0 = half the recipe's epochs"})
    round_lr_drops: tuple[float, ...] = field(
        default=(56 / 85, 71 / 85), metadata={"help": "fractions of a round at which the lr drops x0.1 (official)"})
    rewind_epoch: int = field(default=2, metadata={"help": "the ticket starts from the state after this epoch"})


@dataclass
class SearchState:
    """The search between epochs: where it is, the net, the scores and both optimizers (stored as a dict)."""

    round: int
    epoch: int
    model: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    weight_optimizer: dict[str, Any]
    score_optimizer: dict[str, Any]
    seconds: float


def soft_masks(scores: dict[str, torch.Tensor], temperature: float, initial_value: float) -> dict[str, torch.Tensor]:
    """m = sigmoid(beta * s) / sigmoid(s0): 1 everywhere at the start of the search."""
    scale = 1.0 / torch.sigmoid(torch.tensor(initial_value)).item()
    return {name: torch.sigmoid(temperature * score) * scale for name, score in scores.items()}


def ticket_masks(scores: dict[str, torch.Tensor], sparsity: float | None) -> Masks:
    """1[s > 0] (the ticket the search found), or the global top-(1 - sparsity) of s when one is asked."""
    if sparsity is None:
        return {name: (score > 0).float() for name, score in scores.items()}
    return global_mask(scores, sparsity)


def found_sparsity(scores: dict[str, torch.Tensor]) -> float:
    total = sum(score.numel() for score in scores.values())
    return sum(int((score <= 0).sum()) for score in scores.values()) / total


@register("continuous-sparsification")
class ContinuousSparsification(Method):
    Settings = ContinuousSparsificationSettings
    finds_sparsity = True

    def search_stage(self, spec: JobSpec, recipe: TrainSettings) -> StageSpec:
        return StageSpec(SEARCH_STAGE, recipe_key(spec, recipe) | {"settings": asdict(self.settings)}, SEARCH_VERSION)

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        return [StageNeed(self.search_stage(spec, recipe))]

    def round_epochs(self, recipe: TrainSettings) -> int:
        return self.settings.round_epochs or max(1, recipe.epochs // 2)

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        search = PlannedPhase(self.settings.rounds * self.round_epochs(train_settings), evaluations=0,
                              stage=self.search_stage(spec, train_settings).label)
        return [search, PlannedPhase.training(train_settings)]

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        settings = self.settings
        round_epochs = self.round_epochs(context.train_settings)
        rewind_epoch = min(settings.rewind_epoch, round_epochs)
        search = context.use_stage(self.search_stage(context.spec, context.train_settings),
                                   lambda folder: self.search(context, folder, round_epochs, rewind_epoch)).value
        scores = {name: score.to(context.device) for name, score in search["scores"].items()}
        masks = ticket_masks(scores, context.sparsity)
        ticket = context.new_model()
        if rewind_epoch > 0:
            ticket.load_state_dict(search["rewind_state"])
        result = context.train(ticket, "ticket", masks=masks)
        return [context.record(ticket, result.masks, result.evaluation, settings.rounds * round_epochs + result.epochs,
                               found_sparsity=found_sparsity(scores), forced=context.sparsity is not None,
                               rewind_epoch_used=rewind_epoch)]

    def search(self, context: JobContext, folder: Path, round_epochs: int, rewind_epoch: int) -> dict[str, Any]:
        """The search rounds from theta_0 (resumable after every epoch, in the stage's `folder`): the final
        mask scores, the state after `rewind_epoch` epochs and the search's seconds."""
        settings = self.settings
        model = context.new_model()
        weights = prunable_parameters(model)
        scores = {name: torch.full_like(weight, settings.mask_initial_value, requires_grad=True)
                  for name, weight in weights.items()}
        recipe = context.train_settings
        sgd = {"momentum": recipe.momentum, "nesterov": True, "lr": recipe.lr}
        weight_optimizer = torch.optim.SGD(model.parameters(), weight_decay=recipe.weight_decay, **sgd)
        score_optimizer = torch.optim.SGD(list(scores.values()), weight_decay=0.0, **sgd)
        schedule = context.schedule(epochs=round_epochs, lr_drops=settings.round_lr_drops)
        checkpoint, rewind_path = folder / SEARCH_CHECKPOINT, folder / REWIND_STATE
        stored = load_latest_checkpoint(checkpoint, context.device, "the search")
        state = SearchState(**stored) if stored is not None else None
        past_rewind = state is not None and (state.round, state.epoch) >= (0, rewind_epoch) and rewind_epoch > 0
        if past_rewind and load_value(rewind_path, lambda value: isinstance(value, dict)) is None:
            print(f"warning: the search in {folder} is past its rewind epoch {rewind_epoch} but has no readable "
                  f"{REWIND_STATE}; restarting the search", file=sys.stderr, flush=True)
            state = None
        first_round, first_epoch, seconds = 0, 0, 0.0
        if state is not None:
            model.load_state_dict(state.model)
            with torch.no_grad():
                for name, score in scores.items():
                    score.copy_(state.scores[name])
            weight_optimizer.load_state_dict(state.weight_optimizer)
            score_optimizer.load_state_dict(state.score_optimizer)
            first_round, first_epoch, seconds = state.round, state.epoch, state.seconds
        model.train()
        for round_index in range(first_round, settings.rounds):
            for epoch in range(first_epoch if round_index == first_round else 0, round_epochs):
                started = time.perf_counter()
                exponent = epoch / (round_epochs - 1) if round_epochs > 1 else 1.0
                temperature = settings.final_temperature**exponent
                for optimizer in (weight_optimizer, score_optimizer):
                    for group in optimizer.param_groups:
                        group["lr"] = schedule.lr_at(epoch)
                seed = context.seed("data", round_index * round_epochs + epoch)
                for images, labels in context.data.train_batches(seed, recipe.batch_size):
                    masks = soft_masks(scores, temperature, settings.mask_initial_value)
                    masked = {name: weight * masks[name] for name, weight in weights.items()}
                    with autocast(context.device, recipe.precision):
                        loss = F.cross_entropy(functional_call(model, masked, (images,)), labels)
                    loss = loss + settings.lmbda * sum(mask.sum() for mask in masks.values())
                    weight_optimizer.zero_grad(set_to_none=True)
                    score_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    weight_optimizer.step()
                    score_optimizer.step()
                last_epoch = epoch == round_epochs - 1
                if last_epoch and round_index < settings.rounds - 1:
                    with torch.no_grad():
                        for score in scores.values():
                            score.mul_(settings.final_temperature).clamp_(max=settings.mask_initial_value)
                if round_index == 0 and epoch + 1 == rewind_epoch:
                    save_checked(rewind_path, model.state_dict())
                seconds += time.perf_counter() - started
                next_round, next_epoch = (round_index + 1, 0) if last_epoch else (round_index, epoch + 1)
                write_checkpoint(checkpoint, vars(SearchState(
                    next_round, next_epoch, model.state_dict(), {name: score.detach() for name, score in scores.items()},
                    weight_optimizer.state_dict(), score_optimizer.state_dict(), seconds)))
        return {"scores": {name: score.detach().cpu() for name, score in scores.items()},
                "rewind_state": load_checked(rewind_path) if rewind_epoch else None,
                "epochs": settings.rounds * round_epochs, "seconds": seconds}
