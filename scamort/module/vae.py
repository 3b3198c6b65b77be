"""The torch module: one Gaussian expert per modality, their product, one decoder per modality.

It knows nothing of AnnData. A minibatch is a dict:
    x     {modality: SparseRows, N rows x F_m counts}; rows of cells lacking m are never read
    mask  (N, M) float, 1 where cell n has modality m (the order of ``config.n_features``)
    cov   (N, K) int64 category codes: the batch (``nn.covariates.BATCH``), then each
          categorical covariate
    mask_host  (optional) the same mask as a NumPy bool array on the host

Every index set (which cells have a modality, which cells a view uses) is read from the
host mask and every gathered block is sized from host row offsets, so a training step
never waits for the device to report a shape: no host-device synchronisation per step.
Without ``mask_host`` the mask is copied to the host once per call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from ..nn import DecoderShape, GaussianEncoder, SparseRows, one_hot_covariates
from ..nn.covariates import BATCH, batch_codes
from ..nn.sparse import host_index_on
from .config import LossOutput, ModuleConfig
from .consistency import cycle_loss
from .poe import product_of_experts
from .refine import refine

__all__ = ["LossOutput", "ModuleConfig", "MultiVAE"]


def host_mask(mask: torch.Tensor, host: np.ndarray | None = None) -> np.ndarray:
    """The (N, M) modality mask as a host bool array (``host`` when the batch has it)."""
    return np.asarray(mask.detach().bool().cpu()) if host is None else host


def on_present_rows(
    present: np.ndarray, device, compute, fill: tuple[float, ...]
) -> tuple[torch.Tensor, ...]:
    """Run ``compute(rows, idx)`` on the rows where ``present`` (a host bool array) holds
    (``rows`` on the host, ``idx`` the same on ``device``) and scatter each tensor it
    returns back into a full-height tensor whose other rows are ``fill``; the row count
    comes from the host, so no synchronisation."""
    rows = np.flatnonzero(present)
    idx = host_index_on(rows, device)
    parts = compute(rows, idx)
    return tuple(
        t.new_full((len(present), *t.shape[1:]), f).index_copy(0, idx, t)
        for t, f in zip(parts, fill)
    )


def _two_player_logits(clf: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An adversary's two players in one optimizer step: the classifier's logits on z
    detached (a loss on them trains the classifier alone) and the logits of a copy of it
    with detached weights on z (a loss on them trains the encoders alone)."""
    frozen = {k: v.detach() for k, v in clf.named_parameters()}
    return clf(z.detach()), torch.func.functional_call(clf, frozen, (z,))


class MultiVAE(nn.Module):
    """Product-of-experts VAE over any set of count modalities."""

    def __init__(self, config: ModuleConfig):
        super().__init__()
        self.config = config
        self.modalities = tuple(config.n_features)
        self.encoders = nn.ModuleDict({m: self._encoder(m) for m in self.modalities})
        # what each expert reads of its counts (the kind's transform; some, as TF-IDF,
        # learn statistics from the training data: ``fit_inputs``)
        self.inputs = nn.ModuleDict(
            {
                m: spec.entry.encoder_input(spec.options, config.n_features[m])
                for m, spec in config.modalities.items()
            }
        )
        self.decoders = nn.ModuleDict({m: self._decoder(m) for m in self.modalities})
        # Adversarial batch mixing (as MULTIVI's): a classifier learns the batch from z,
        # and the encoders learn to make its guess uniform over the other batches.
        self.batch_classifier = (
            self._classifier(config.n_categories[BATCH])
            if config.adversarial_batch_weight > 0
            else None
        )
        # Adversarial view mixing: per modality, a classifier learns whether a posterior
        # read from that modality alone belongs to a paired cell or to a cell measured
        # in that modality only, and the encoders learn to make it guess wrong.
        self.view_classifiers = (
            nn.ModuleDict({m: self._classifier(2) for m in self.modalities})
            if config.adversarial_view_weight > 0
            else None
        )

    def fit_inputs(self, cells_per_feature: dict[str, np.ndarray], n_cells: dict[str, int]):
        """Set the encoder inputs' statistics from the training cells: per modality, the
        cells with a count of each feature and the cells that have the modality."""
        for m, transform in self.inputs.items():
            transform.fit(cells_per_feature[m], n_cells[m])

    def _classifier(self, n_classes: int) -> nn.Module:
        """An adversary's classifier of z: two hidden layers of 32."""
        return nn.Sequential(
            nn.Linear(self.config.n_latent, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
            nn.Linear(32, n_classes),
        )  # fmt: skip

    def encoder_input(self, m: str, x: SparseRows) -> SparseRows:
        """What expert ``m`` reads of its counts (its kind's input transform)."""
        return self.inputs[m](x)

    def _encoder(self, m: str) -> GaussianEncoder:
        c = self.config
        n_cov = sum(c.n_categories) if c.encode_covariates else 0
        return GaussianEncoder(
            c.n_features[m], c.n_latent, n_cov, c.n_hidden, c.n_layers_encoder, c.dropout
        )

    def _decoder(self, m: str) -> nn.Module:
        c = self.config
        spec = c.modalities[m]
        shape = DecoderShape(
            n_latent=c.n_latent,
            n_features=c.n_features[m],
            n_cov=sum(c.n_categories),
            n_hidden=c.n_hidden,
            n_layers=c.n_layers_decoder,
            dropout=c.dropout,
            output_covariates=c.output_covariates,
            n_batches=c.n_categories[BATCH],
        )
        return spec.entry.decoder(spec.options, shape)

    # ---- inference: q(z | x) ---------------------------------------------------------
    def covariates(self, cov: torch.Tensor) -> torch.Tensor:
        return one_hot_covariates(cov, self.config.n_categories)

    def experts(
        self,
        x: dict[str, SparseRows],
        mask: torch.Tensor,
        cov: torch.Tensor,
        mask_host: np.ndarray | None = None,
    ) -> list[Normal]:
        """One Normal per modality, shape (N, D). Rows of cells lacking m are N(0, 1)
        placeholders; the encoder never sees them and the product of experts drops them."""
        cov_in = (
            self.covariates(cov)
            if self.config.encode_covariates
            else cov.new_zeros((cov.shape[0], 0), dtype=torch.float32)
        )
        has = host_mask(mask, mask_host)
        out = []
        for j, m in enumerate(self.modalities):
            if has[:, j].all():
                out.append(self.encoders[m](self.encoder_input(m, x[m]), cov_in))
                continue

            def encode(rows, idx, m=m):
                q = self.encoders[m](self.encoder_input(m, x[m].rows(rows)), cov_in[idx])
                return q.loc, q.scale

            loc, scale = on_present_rows(has[:, j], mask.device, encode, fill=(0.0, 1.0))
            out.append(Normal(loc, scale, validate_args=False))
        return out

    def inference(self, x, mask, cov, mask_host=None) -> dict:
        experts = self.experts(x, mask, cov, mask_host)
        return {"experts": experts, "qz": self.posterior(experts, mask)}

    def posterior(self, experts: list[Normal], mask: torch.Tensor) -> Normal:
        """q(z | the modalities in ``mask``): the product of those experts, and of the
        prior unless ``config.prior_expert`` is False."""
        return product_of_experts(experts, mask, prior=self.config.prior_expert)

    # ---- generative: p(x | z) --------------------------------------------------------
    def log_sizes(
        self, x: dict[str, SparseRows], mask: torch.Tensor, mask_host: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        """(N, 1) size term per modality, read from the observed counts of present cells."""
        has = host_mask(mask, mask_host)
        return {
            m: on_present_rows(
                has[:, j],
                mask.device,
                lambda rows, idx, m=m: (self.decoders[m].log_size(x[m].rows(rows)),),
                fill=(0.0,),
            )[0]
            for j, m in enumerate(self.modalities)
        }

    def generative(
        self, z: torch.Tensor, cov: torch.Tensor, m: str, log_size: torch.Tensor | None = None
    ) -> Distribution:
        """p(x_m | z, s); ``log_size=None`` gives normalized values (size term 0)."""
        if log_size is None:
            log_size = z.new_zeros((z.shape[0], 1))
        return self.decoders[m](z, self.covariates(cov), log_size, batch_codes(cov))

    def log_likelihood(self, z, x, score, cov, log_sizes, cells=None) -> torch.Tensor:
        """(N,) sum over scored modalities of log p(x_m | z); unscored ones add exactly 0.

        ``score`` is an (N, M) host bool array: row i of ``z`` is scored on modality m
        where ``score[i, m]``. Row i belongs to cell ``cells[i]`` (a host index array) of
        ``x``, ``cov`` and ``log_sizes`` (``cells=None``: row i is cell i)."""
        total = z.new_zeros(z.shape[0])
        for j, m in enumerate(self.modalities):
            rows = np.flatnonzero(score[:, j])
            if rows.size == 0:
                continue
            data_rows = rows if cells is None else cells[rows]
            idx, c = host_index_on(rows, z.device), host_index_on(data_rows, z.device)
            ll = self.decoders[m].log_prob(
                z[idx],
                self.covariates(cov[c]),
                log_sizes[m][c],
                batch_codes(cov[c]),
                x[m].rows(data_rows),
            )
            total = total.index_add(0, idx, ll)
        return total

    # ---- loss ------------------------------------------------------------------------
    def views(self, mask: torch.Tensor, has: np.ndarray) -> list[tuple]:
        """(expert mask, the same on the host, host indices of the cells using the view,
        (N,) weights) for the joint view and, for paired cells, the single-modality
        views (one expert alone with the prior). ``has`` is ``mask`` on the host.

        ``single_views="all"``: every paired cell gets each of its single views.
        ``"sample"``: every paired cell gets one of its single views, drawn uniformly
        (on the host), weighted by its number of modalities: an unbiased estimate of the
        same sum, at one decoding instead of one per modality."""
        n_mods = mask.sum(1)
        paired = has.sum(1) > 1
        views = [(mask, has, np.arange(len(has)), torch.ones_like(n_mods))]
        w = torch.full_like(n_mods, self.config.single_view_weight)
        if self.config.single_views == "sample":
            choose = torch.from_numpy((has | ~paired[:, None]).astype(np.float32))
            pick = torch.multinomial(choose, 1)[:, 0].numpy()
            w = w * n_mods
        for j in range(len(self.modalities)):
            only = torch.zeros_like(mask)
            only[:, j] = mask[:, j]
            only_host = np.zeros_like(has)
            only_host[:, j] = has[:, j]
            use = paired if self.config.single_views == "all" else paired & (pick == j)
            views.append((only, only_host, np.flatnonzero(use), w))
        return views

    def adversarial_loss(self, z: torch.Tensor, batch_codes: torch.Tensor) -> torch.Tensor:
        """Both sides of the batch game, for one optimizer: the classifier's cross-entropy
        on z with z detached (trains the classifier only), plus the encoders' loss on z
        with the classifier's weights detached: cross-entropy against the uniform
        distribution over the batches the cell is not from (trains the encoders only)."""
        on_detached, frozen = _two_player_logits(self.batch_classifier, z)
        learn = nn.functional.cross_entropy(on_detached, batch_codes)
        log_p = torch.log_softmax(frozen, -1)
        others = 1.0 - nn.functional.one_hot(batch_codes, log_p.shape[-1]).to(log_p.dtype)
        fool = -(log_p * others).sum(-1).mean() / (log_p.shape[-1] - 1)
        return self.config.adversarial_batch_weight * (learn + fool)

    def view_adversarial_loss(self, z, view_of_row, cells, has) -> torch.Tensor:
        """The view game of every modality: rows of ``z`` read from modality j alone,
        label 1 for a paired cell's single view (``view_of_row == j + 1``), 0 for the
        joint view of a cell measured in j only. Both classes weigh the same, and a
        modality with no row of either class in the minibatch adds (an exact) zero."""
        alone = has.sum(1) == 1
        total = z.new_zeros(())
        for j, m in enumerate(self.modalities):
            single = view_of_row == j + 1
            only = (view_of_row == 0) & alone[cells] & has[cells, j]
            clf = self.view_classifiers[m]
            if not single.any() or not only.any():
                # a zero that reaches every weight: each step gives every parameter a
                # gradient, as several-process training (DDP) expects
                total = total + 0.0 * sum(p.sum() for p in clf.parameters())
                continue
            rows = np.flatnonzero(single | only)
            labels = torch.as_tensor(single[rows].astype(np.int64), device=z.device)
            zj = z[host_index_on(rows, z.device)]
            w = labels.new_tensor([1.0 / only.sum(), 1.0 / single.sum()], dtype=z.dtype) / 2
            on_detached, frozen = _two_player_logits(clf, zj)
            ce = nn.functional.cross_entropy
            learn = (w[labels] * ce(on_detached, labels, reduction="none")).sum()
            fool = (w[labels] * ce(frozen, 1 - labels, reduction="none")).sum()
            total = total + learn + fool
        return self.config.adversarial_view_weight * total

    def cycle_loss(self, experts, mask, has, cov, log_sizes) -> torch.Tensor:
        """The swap-consistency terms (:func:`.consistency.cycle_loss`)."""
        return cycle_loss(self, experts, mask, has, cov, log_sizes)

    def _swaps_train_encoders(self) -> bool:
        """Whether a swap-consistency term is on and has an encoder weight to train (its
        gradient reaches the encoders alone: with them frozen, as in query training, it
        would cost a decoding and an encoding per step and change nothing)."""
        c = self.config
        on = max(c.cycle_weight, c.cross_cycle_weight) > 0
        return on and any(p.requires_grad for p in self.encoders.parameters())

    def _refined_loss(self, experts, x, mask, has, cov, log_sizes, kl_weight, steps, lr):
        q = self.posterior(experts, mask)
        sizes = {m: v.detach() for m, v in log_sizes.items()}

        def log_lik(z):  # (1, N, D) -> (1, N)
            return self.log_likelihood(z[0], x, has, cov, sizes)[None]

        r = refine(log_lik, q.loc.detach(), q.scale.detach(), steps, lr=lr, n_eval=1)
        q_ref = Normal(r.loc, r.scale, validate_args=False)
        rec = self.log_likelihood(q_ref.rsample(), x, has, cov, sizes)
        kl_ref = kl_divergence(q_ref, Normal(0.0, 1.0, validate_args=False)).sum(-1)
        pull = kl_divergence(q_ref, q).sum(-1)  # refined params are constants here
        return (-(rec - kl_weight * kl_ref) + pull).mean()

    def loss(
        self, batch: dict, kl_weight: float = 1.0, refine_steps: int = 0, refine_lr: float = 0.05
    ) -> LossOutput:
        """Negative weighted ELBOs per cell, averaged. ``refine_steps > 0`` adds the cheap
        semi-amortized variant: the joint posterior is refined K steps with the decoders'
        gradients cut, the decoders also learn from the refined posterior's ELBO, and the
        encoders are pulled toward it by KL(stop-gradient refined || amortized). In
        training mode with ``adversarial_batch_weight > 0``, adds the batch game on the
        samples of every view (:meth:`adversarial_loss`)."""
        x, mask, cov = batch["x"], batch["mask"], batch["cov"]
        has = host_mask(mask, batch.get("mask_host"))
        experts = self.experts(x, mask, cov, has)
        log_sizes = self.log_sizes(x, mask, has)
        prior = Normal(0.0, 1.0, validate_args=False)
        z, cells, scored, kl, weight, view_of_row = [], [], [], [], [], []
        for k, (view_mask, view_host, use, w) in enumerate(self.views(mask, has)):
            if use.size == 0 or (k > 0 and self.config.single_view_weight == 0):
                continue
            idx = host_index_on(use, mask.device)
            q = self.posterior(
                [Normal(e.loc[idx], e.scale[idx], validate_args=False) for e in experts],
                view_mask[idx],
            )
            z.append(q.rsample())
            kl.append(kl_divergence(q, prior).sum(-1))
            cells.append(use)
            view_of_row.append(np.full(use.size, k))
            # Cross reconstruction: a single-modality posterior must explain every
            # modality the cell has, which ties the experts to one shared space.
            scored.append(has[use] if self.config.cross_reconstruction else view_host[use])
            weight.append(w[idx])
        z, kl, weight = torch.cat(z), torch.cat(kl), torch.cat(weight)
        cells = np.concatenate(cells)  # the cell of every row of z
        rec = self.log_likelihood(z, x, np.concatenate(scored), cov, log_sizes, cells)
        n = mask.shape[0]
        loss = -(weight * (rec - kl_weight * kl)).sum() / n
        if refine_steps > 0:
            loss = loss + self._refined_loss(
                experts, x, mask, has, cov, log_sizes, kl_weight, refine_steps, refine_lr
            )
        if self.training and self.batch_classifier is not None:
            codes = batch_codes(cov[host_index_on(cells, mask.device)])
            loss = loss + self.adversarial_loss(z, codes)
        if self.training and self.view_classifiers is not None:
            loss = loss + self.view_adversarial_loss(z, np.concatenate(view_of_row), cells, has)
        if self.training and self._swaps_train_encoders():
            loss = loss + self.cycle_loss(experts, mask, has, cov, log_sizes)
        # The joint view comes first and covers all n cells in order.
        return LossOutput(loss, rec[:n] - kl[:n], rec[:n], kl[:n])
