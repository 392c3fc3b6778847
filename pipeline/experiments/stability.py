"""Experiment S (docs/science.md §5): equivariant stationary points, and whether Aug and Equi see them alike.

One trial, one network, one seed, in float64: from the seeded A⁰ ∈ E, find a stationary point A* of R on E
(L-BFGS on projected gradients, then trust-region Newton steps, in a loop of its own with a recorded row
per block, so that a trial streams its convergence and resumes mid-search:
``pipeline.experiments.stability_loop``); then measure, once, at A*: the identity of claim 1, the block
structure of the Aug Hessian, the low and high ends of the spectra of H_E (on E) and H_⊥ (on E⊥), and
the growth of perturbations off E under Aug gradient descent, plain and regularised (``results/`` of the
trial file). The mathematics is ``pipeline.core.stationary``; the settings and the networks'
expectations are ``pipeline.experiments.stability_settings``, and what a trial runs (its stepper and the
measurements, which need torch) ``pipeline.experiments.stability_trial``.

Networks: the Experiment G network for each group, the CNN of Experiment C (A* from its equivariant
parametrisation, then measured in the variant's unconstrained one: ``cross`` meets the premises,
``skew`` and ``nonunitary`` are where they fail), and two controls of the claim-3 detector on two inputs with
G = Z₂ (``pipeline.core.models.swap_pair``): ``toy-z2``, where claim 3 holds provably, and ``toy-linear``, a convex
model where it cannot. A trial's cell is its network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from pipeline.experiments.base import Experiment, Labels
from pipeline.experiments.claims import (
    ALL_OF,
    ANY_OF,
    IDENTITY_AT_ROUNDOFF,
    IDENTITY_FAILS,
    STABILITY_DIFFERS,
    Claim,
    GridCell,
)
from pipeline.experiments.cnn import EXPERIMENT as CNN_EXPERIMENT
from pipeline.experiments.cnn import VARIANTS
from pipeline.experiments.groups import EXPERIMENT as GROUPS_EXPERIMENT
from pipeline.experiments.groups import GROUP_ORDERS
from pipeline.experiments.loop import OwnLoop
from pipeline.experiments.stability_settings import (
    CNN_PREFIX,
    CONTROLS,
    DEMONSTRATED_WORD,
    MODE,
    NETWORKS,
    PREMISES_HOLD,
    TOY_PREFIX,
    StabilitySettings,
)
from pipeline.progress import StageReport
from pipeline.schema import ACCURACY, GRAD_NORM, LOSS
from pipeline.settings import CommonSettings

if TYPE_CHECKING:  # for annotations only: importing them brings torch, which the launch layer does without
    import torch

    from pipeline.core.data import Dataset
    from pipeline.core.models.base import MeasuredModel
    from pipeline.core.models.cnn import CNN
    from pipeline.experiments.stability_trial import StationaryStepper

__all__ = ["CONTROLS", "EXPERIMENT", "NETWORKS", "StabilityExperiment", "StabilitySettings"]


class ResultsSink(Protocol):
    """What ``finalize`` writes to (of the run layer's sinks, what this layer needs): the results at A*."""

    def write_results(self, arrays: dict[str, Any], attrs: dict[str, Any]) -> None: ...


class StabilityExperiment(Experiment[StabilitySettings, "StationaryStepper"]):
    name = "stability"
    settings_type = StabilitySettings
    cell_key = "network"
    mode_key = "network"  # there is one mode (MODE); labels() says so
    aliases = {"networks": "network"}
    trajectory_x = "epoch"
    has_final_stage = True
    title = "Experiment S"
    science_section = "5"
    cell_names = NETWORKS
    settings_per_cell = True  # presets give each network its own budget and sizes: ids name the network only

    # Its own figures come from what trials measure at A* (analysis/stationary_points.py); of the trajectory
    # figures only the convergence of the search says anything. A row is a block of the search, not an epoch;
    # its grad_norm is ||Pi_E grad R|| at the row's point.
    standard_figures = ("training_curves",)
    row_words = "search block (first-order blocks, then Newton steps)"
    curve_metrics = {LOSS: "R at the row's point", GRAD_NORM: "‖Π_E∇R‖ at the row's point",
                     ACCURACY: "training accuracy"}
    log_curves = (GRAD_NORM,)
    results_analysis = "stationary_points"  # the stationary point's spectra and perturbations
    curves_title = "the search for A*, block by block, on the (untransformed) training data"

    def labels(self, settings: StabilitySettings) -> Labels:
        return Labels(self.cell_key, settings.network, MODE)

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """docs/science.md §7: claim 1 at round-off where its premises hold (and Aug's gradient departing from
        Equi's where they do not); claim 3 wherever they hold; the detector's verdict on its controls; then
        claims 1 and 3 over all the networks of the grid that are not controls."""
        claims = []
        for cell in cells:
            subject = f"stationary points, {cell.cell}"
            if cell.cell in CONTROLS:
                expected = CONTROLS[cell.cell]
                why = ("claim 3 holds here provably" if expected == DEMONSTRATED_WORD
                       else "a convex model: H ⪰ 0 everywhere, so claim 3 cannot hold")
                claims.append(Claim(STABILITY_DIFFERS, f"detector control, {cell.cell}",
                                    f"the claim-3 detector says “{expected}” ({why})", cell, "5", "controls",
                                    expected=expected))
            elif PREMISES_HOLD.get(cell.cell, False):
                claims.append(Claim(IDENTITY_AT_ROUNDOFF, subject, "∇R_aug = Π_E ∇R at A⁰ and A* (to round-off)",
                                    cell, "1", "claim 1"))
                claims.append(Claim(STABILITY_DIFFERS, subject, "A* stable for Equi, unstable for Aug", cell, "1",
                                    "claim 3"))
            else:
                why = "incompatible support" if cell.cell.endswith("skew") else "non-unitary parametrisation"
                claims.append(Claim(IDENTITY_FAILS, subject, f"Aug's gradient departs from Equi's on E ({why})", cell,
                                    "1", "claim 4"))
        if any(PREMISES_HOLD.get(cell.cell, False) and cell.cell not in CONTROLS for cell in cells):
            everywhere = GridCell("every compatible network", MODE)
            claims.append(Claim(ALL_OF, "Experiment S", "claim 1: the equivariant stationary points of Equi and Aug "
                                "coincide (the identity holds in every compatible network)", everywhere, "1",
                                "claim 1", threshold=IDENTITY_AT_ROUNDOFF))
            claims.append(Claim(ANY_OF, "Experiment S", "claim 3: a stationary point stable for Equi can be unstable "
                                "for Aug (in a network of docs/science.md §3 or §4)", everywhere, "1", "claim 3",
                                threshold=STABILITY_DIFFERS))
        return claims

    def id_prefix(self, settings: StabilitySettings) -> str:
        return f"stab-{settings.network}"

    def meant_to_learn(self, settings: dict[str, Any]) -> bool:
        return settings.get("network") not in CONTROLS  # the controls fit real numbers: no accuracy to judge

    def mode_words(self, mode: str) -> str:
        return "at the stationary point A*" if mode == MODE else super().mode_words(mode)

    def cell_title(self, cell: str) -> str:
        # Seven networks side by side: the groups' full titles would run into each other.
        return cell

    def irrelevant(self, settings: StabilitySettings) -> set[str]:
        unused: set[str] = set()
        if settings.refine == "none":
            unused |= {"newton_iterations", "cg_iterations", "hessian_budget", "time_budget", "stationarity_target",
                       "stall_window", "check_steps"}
        if settings.is_control:  # two fixed samples, a loss of their own, and exactly the objective of §5
            return unused | {"cnn_channels", "image_size", "basis_seed", "n", "channels", "activation", "n_samples",
                             "loss", "data_source", "weight_decay"}
        if not settings.is_cnn:
            return unused | {"cnn_channels", "image_size", "basis_seed"}
        unused |= {"n", "channels", "activation"}  # the CNN has tanh already
        if VARIANTS[settings.network[len(CNN_PREFIX):]][1] != "nonunitary":
            unused.add("basis_seed")
        return unused

    def total_epochs(self, settings: StabilitySettings) -> int:
        newton = settings.newton_iterations if settings.refine == "newton" else 0
        return -(-settings.max_iterations // settings.block) + newton

    def evaluation_loss(self, settings: StabilitySettings) -> str:
        if settings.is_control:
            from pipeline.core.training import SQUARED_ERROR  # deferred: torch, kept out of the launch layer

            return SQUARED_ERROR
        return settings.loss

    # -- the networks, borrowed from the experiments that define them ---------------------------------------
    def _delegate(self, settings: StabilitySettings) -> tuple[Experiment, CommonSettings]:
        """The experiment that owns the network, and the settings of its Equi model."""
        common = {"seed": settings.seed, "n_samples": settings.n_samples, "dtype": settings.dtype,
                  "device": settings.device, "data_source": settings.data_source, "chunk_size": settings.chunk_size}
        if settings.is_cnn:
            return CNN_EXPERIMENT, CNN_EXPERIMENT.make_settings(
                {**common, "variant": settings.network[len(CNN_PREFIX):], "cnn_channels": settings.cnn_channels,
                 "image_size": settings.image_size, "basis_seed": settings.basis_seed})
        return GROUPS_EXPERIMENT, GROUPS_EXPERIMENT.make_settings(
            {**common, "group": settings.network, "mode": "equi", "n": settings.n, "channels": settings.channels,
             "loss": settings.loss, **({"hidden_activation": "tanh", "invariant_activation": "tanh"}
                                       if settings.activation == "tanh" else {})})

    def load_data(self, settings: StabilitySettings, device: torch.device | str, dtype: torch.dtype) -> Dataset:
        if settings.is_control:
            from pipeline.core.models.swap_pair import swap_pair_data  # deferred: torch, kept out of the launch layer

            return swap_pair_data().to(device, dtype)
        owner, theirs = self._delegate(settings)
        return owner.load_data(theirs, device, dtype)

    def build_model(self, settings: StabilitySettings, phase: int = 1) -> MeasuredModel:
        if settings.is_control:
            from pipeline.core.models.swap_pair import SwapPairModel  # deferred: torch, as above
            from pipeline.core.training import seeded_generator  # deferred: torch, as above

            model = SwapPairModel(settings.network[len(TOY_PREFIX):]).double()
            model.initialize(seeded_generator(settings.seed, "init"))
            return model
        owner, theirs = self._delegate(settings)
        return owner.build_model(theirs, 1)  # the Equi model: parametrised in E, or projected onto it

    def stepper(self, models: list[MeasuredModel], seeds: list[int], settings: StabilitySettings | None = None,
                data: Dataset | None = None) -> StationaryStepper:
        from pipeline.experiments.stability_trial import StationaryStepper  # deferred: torch, as above

        if len(models) != 1:
            raise ValueError("stability trials cannot be trained packed")
        if settings is None or data is None:
            raise ValueError("a stability trial's stepper needs its settings and its data")
        return StationaryStepper(models[0], settings, data, seeds, self.evaluation_loss(settings))

    def own_loop(self) -> OwnLoop:
        """The search for A* in its own loop, a row per block (``pipeline.experiments.stability_loop``), not epochs."""
        from pipeline.experiments.stability_loop import search_loop  # deferred: torch, kept out of the launch layer

        return search_loop

    # -- the measurements at A* ------------------------------------------------------------------------------
    def measured_model(self, settings: StabilitySettings, model: MeasuredModel) -> MeasuredModel:
        """The model in the coordinates the claims are about: for the CNN, the variant's unconstrained
        parametrisation (the same function)."""
        if not settings.is_cnn:
            return model
        return cast("CNN", model).transferred(VARIANTS[settings.network[len(CNN_PREFIX):]][1], settings.basis_seed)

    def finalize(self, settings: StabilitySettings, stepper: StationaryStepper, data: Dataset,
                 sinks: Sequence[ResultsSink], progress: StageReport | None = None) -> None:
        from pipeline.core.training import seeded_generator  # deferred: torch, as above
        from pipeline.experiments.stability_trial import measure, silent  # deferred: torch, as above

        start = self.measured_model(settings, self.build_model(settings).to(device=data.images.device,
                                                                             dtype=data.images.dtype))
        arrays, attrs = measure(settings, stepper.search, self.measured_model(settings, stepper.models[0]), start,
                                data, seeded_generator(settings.seed, "stability measurements"),
                                self.evaluation_loss(settings), self.group_order(settings), progress or silent)
        attrs["premises_hold"] = PREMISES_HOLD[settings.network]
        for sink in sinks:
            sink.write_results(arrays, attrs)

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings: StabilitySettings) -> int:
        if settings.is_control:
            return 8
        owner, theirs = self._delegate(settings)
        return owner.forward_flops_per_sample(theirs)

    def group_order(self, settings: StabilitySettings) -> int:
        if settings.is_control:
            return 2
        return 4 if settings.is_cnn else GROUP_ORDERS[settings.network](settings.n)

    def trial_flops(self, settings: StabilitySettings) -> int:
        """At most: the search (about 1.3 gradient evaluations an iteration, line searches included; then its
        budget of Hessian-vector products, a product costing about two gradients, and a gradient per Newton
        step), the claim-1 gradients at A⁰ and A*, the spectra (a product per basis vector of a dense block, at
        most ``dense_limit``; else a Lanczos run; H_⊥'s over the |G|-fold orbit), four perturbation runs of Aug
        gradient steps."""
        samples = 2 if settings.is_control else settings.n_samples
        forward = self.forward_flops_per_sample(settings) * samples
        gradient, orbit = 3 * forward, self.group_order(settings)
        search = 1.3 * settings.max_iterations * gradient
        if settings.refine == "newton":
            products = settings.newton_iterations * (settings.cg_iterations + 1)
            if settings.hessian_budget:
                products = min(products, settings.hessian_budget)
            search += (2 * products + settings.newton_iterations) * gradient
        claims = 2 * 2 * gradient * (1 + orbit)
        lanczos = max(settings.lanczos_steps, settings.dense_limit) * 2 * gradient * (1 + orbit)
        perturbations = 4 * settings.perturbation_steps * gradient * orbit
        return int(search + claims + lanczos + perturbations)

    def snapshot_values(self, settings: StabilitySettings, phase: int = 1) -> int:
        if settings.is_control:
            return 3 if settings.network == "toy-z2" else 2  # (a, w1, w2) or (w1, w2)
        owner, theirs = self._delegate(settings)
        return owner.snapshot_values(theirs, 1)  # the Equi model's, whose search it is


EXPERIMENT = StabilityExperiment()
