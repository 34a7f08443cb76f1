"""Stage 1, the decoder: L1 + LPIPS + an adversarial term with VQGAN's adaptive weight against the DINO patch
discriminator (hinge loss, DiffAug, 8-bit fakes), as in the reference recipe (rae_method.md §1.5-1.7)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..interop.loss_weights import disc_state, lpips_states
from ..models.discriminator import DinoDiscriminator, DiscConfig
from ..models.perceptual import LPIPS, LPIPSConfig
from .modules import TrainModule
from .optim import OptimConfig, build_optimizer


@dataclass(frozen=True)
class RAETrainConfig(OptimConfig):
    """`train_rae`: the optimization recipe, the loss terms and when they start (in `unit`), and the data source.

    `source: latents` trains on the cached centre-crop latents and their images (fast, the embedded default);
    `source: images` encodes random crops online with the frozen encoder (the reference: shorter side resized to
    `int(resize_ratio x data.image_size)`, 384 at 256 px and 768 at 512, then a random crop, no flip; `resize_ratio:
    null` encodes the cache's centre crops instead, as RAEv2's pre-cropped images);
    `encoder_rope_rescale` runs a DINOv3 encoder's RoPE as in train mode in the generator's steps (each block's
    coordinates scaled by a log-uniform factor in [1/r, r]), as RAEv2's stage 1 does (r = 2). LPIPS and
    the discriminator need pretrained weights (`lpips`, `disc`); with their weights at 0 they are not built, which
    is how the embedded default runs offline.
    """

    source: Literal["latents", "images"]
    resize_ratio: float | None
    encoder_rope_rescale: float | None
    lpips_weight: float
    lpips_start: float
    gan_weight: float
    disc_start: float      # the adversarial term reaches the decoder from here
    disc_upd_start: float  # the discriminator trains from here (the reference: 2 epochs before disc_start)
    max_d_weight: float
    diffaug: bool
    train_tables: bool  # the decoder's position table trains, as in the reference's GPU trainer
    tf32: bool          # TF32 matmuls on the GPU; the reference's train_stage1.py leaves them off
    lpips: LPIPSConfig
    disc: DiscConfig

    TIMES = (*OptimConfig.TIMES, "lpips_start", "disc_start", "disc_upd_start")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resize_ratio is not None and not self.resize_ratio >= 1:
            raise ValueError(f"train_rae.resize_ratio must be >= 1 (the shorter side is resized to resize_ratio x "
                             f"data.image_size before the random data.image_size crop) or null (the centre crop), "
                             f"got {self.resize_ratio}")
        if self.encoder_rope_rescale is not None and not (self.encoder_rope_rescale >= 1 and self.source == "images"):
            raise ValueError(f"train_rae.encoder_rope_rescale {self.encoder_rope_rescale} with source "
                             f"{self.source!r}: the factor is >= 1 (RAEv2: 2), and the encoder runs in the training "
                             "step only with source: images (cached latents are encoded once, in eval mode)")
        if min(self.lpips_weight, self.gan_weight, self.lpips_start, self.disc_start, self.disc_upd_start,
               self.max_d_weight) < 0:
            raise ValueError(f"train_rae: loss weights, starts and max_d_weight must be >= 0: "
                             f"{asdict(self)}")

    def check_environment(self) -> None:
        """The LPIPS and discriminator weights exist when their terms are on (checked when train_rae starts)."""
        disc = self.disc
        if self.lpips_weight > 0:
            for key in ("vgg_weights", "heads_weights"):
                path = getattr(self.lpips, key)
                if not path or not Path(path).is_file():
                    raise FileNotFoundError(f"train_rae.lpips.{key}: weights file {path!r} not found (needed while "
                                            "train_rae.lpips_weight > 0; nothing is downloaded)")
        if self.gan_weight > 0 and disc.weights != "none" and not (disc.weights and Path(disc.weights).is_file()):
            raise FileNotFoundError(f"train_rae.disc.weights: DINO checkpoint {disc.weights!r} not found (needed "
                                    "while train_rae.gan_weight > 0; nothing is downloaded)")


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAug as RAE uses it (translation + colour, no cutout): per image, a shift of up to 1/8 of the size with
    zero fill, then brightness +U(-.5, .5), saturation x U(0, 2) and contrast x U(.5, 1.5). Random numbers are
    drawn as the reference's `DiffAug.aug` draws them (three on/off decisions, then seven per image), so that a seed
    gives its augmentations."""
    b, _, h, w = x.shape
    x = x.float()
    torch.rand(3)  # the reference's per-batch on/off draws: at probability 1 every operation is on
    r = torch.rand(7, b, 1, 1, device=x.device)
    dh, dw = round(h * 0.125), round(w * 0.125)
    th = (r[0] * (2 * dh + 1)).floor().long() - dh
    tw = (r[1] * (2 * dw + 1)).floor().long() - dw
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + th + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + tw + 1).clamp(0, w + 1)
    x = F.pad(x, (1, 1, 1, 1))[torch.arange(b, device=x.device).view(b, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    x = x + (r[2, :, None] - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (2 * r[3, :, None]) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (r[4, :, None] + 0.5) + mean


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Fakes in [-1, 1] on the 256 levels a real image can take, so D cannot tell them apart by precision."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def adaptive_weight(rec: torch.Tensor, gan: torch.Tensor, layer: torch.Tensor, limit: float) -> torch.Tensor:
    """VQGAN's balance: |grad rec| / |grad gan| at the decoder's last layer, clamped to [0, limit], no gradient."""
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-6)).clamp(0, limit).detach()


@contextmanager
def frozen(module: nn.Module):
    """No gradient into `module`'s parameters inside the block (the generator's pass through the discriminator)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class RAEModule(TrainModule):
    """The decoder (with its EMA) and the discriminator heads, stepped as the reference's `train_stage1.py` does:
    the generator step (L1 + LPIPS + adaptive-weighted GAN term; decoder gradients clipped), the EMA update, then
    the discriminator step on the noise-free decoding by the *updated* decoder, then the schedule. One AdamW holds
    both as two groups (the heads' schedule starts at `disc_upd_start`), each step moving only the group that has
    gradients; the discriminator step does not count as an optimizer step. Gradient accumulation over `accumulate`
    micro-batches (set by `fit`) keeps them for the discriminator step; once the adversarial term is on, it also
    computes the adaptive weight of the whole batch before the micro-batches' backward passes. Batches are
    (latent, image) or, with an online `encoder`, (image,), images uint8. With `encoder_rope_rescale` the generator
    sees the encoder's train-mode latents and the discriminator's fakes decode its eval-mode ones, as in RAEv2's
    engine, where the whole RAE is in eval mode for the discriminator's step."""

    def __init__(self, decoder: nn.Module, cfg: RAETrainConfig, encoder: nn.Module | None = None,
                 seed: int = 0) -> None:
        super().__init__(decoder, cfg, objective=None)
        self.automatic_optimization = False
        self.accumulate = 1
        self.encoder = encoder
        self.lpips = LPIPS(*lpips_states(cfg.lpips)) if cfg.lpips_weight > 0 else None
        self.disc = DinoDiscriminator(cfg.disc, seed, disc_state(cfg.disc)) if cfg.gan_weight > 0 else None
        self.augment = diff_augment if cfg.diffaug else (lambda x: x)
        self._micro: list[tuple[torch.Tensor, torch.Tensor]] = []  # this step's (latent, target) micro-batches

    @property
    def partly_unused(self) -> bool:
        """Under DDP each backward pass leaves a part without gradient: the heads in the generator's, the decoder in
        the discriminator's."""
        return self.disc is not None

    def _inputs(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw latent, target image in [0, 1])."""
        if self.encoder is not None:
            (images,) = batch
            x = images.float() / 255
            return self.encoder(x, rescale_rope=self.optim.encoder_rope_rescale is not None), x
        z, images = batch
        return z, images.float() / 255

    def _terms(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's loss terms: `rec` (L1 + weighted LPIPS) and, once it reaches the decoder, `gan`."""
        cfg, step = self.optim, self.global_step
        recon = self.net(z)  # train mode: noise-augmented latent
        real, fake = x * 2 - 1, recon * 2 - 1
        terms = {"l1": F.l1_loss(recon, x)}
        terms["rec"] = terms["l1"]
        if self.lpips is not None and step >= cfg.lpips_start:
            terms["lpips"] = self.lpips(fake, real).mean()
            terms["rec"] = terms["rec"] + cfg.lpips_weight * terms["lpips"]
        if self.uses_gan:
            self.disc.eval()  # no power iteration of the spectral norms in the generator's pass
            with frozen(self.disc):
                terms["gan"] = -self.disc(self.augment(fake)).mean()
        return terms

    @property
    def uses_gan(self) -> bool:
        return self.disc is not None and self.global_step >= self.optim.disc_start

    def generator_loss(self, z: torch.Tensor, x: torch.Tensor,
                       weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The generator's loss; the adversarial term weighted by `weight`, else by the adaptive weight of this
        batch."""
        terms = self._terms(z, x)
        loss = terms.pop("rec")
        if "gan" in terms:
            if weight is None:
                weight = adaptive_weight(loss, terms["gan"], self.model.decoder_pred.weight, self.optim.max_d_weight)
            terms["gan_weight"] = weight
            loss = loss + self.optim.gan_weight * weight * terms["gan"]
        terms["rae"] = loss
        return {"loss": loss, **terms}

    def batch_adaptive_weight(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The adaptive weight of the whole per-device batch split into micro-batches, as the reference computes it on
        its unsplit batch: the norms of the mean last-layer gradients over the micro-batches. The random draws are
        replayed by the training pass that follows (the generators' states restored)."""
        layer, g_rec, g_gan = self.model.decoder_pred.weight, 0, 0
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for z, x in micro:
                terms = self._terms(z, x)
                g_rec = g_rec + torch.autograd.grad(terms["rec"], layer, retain_graph=True)[0]
                g_gan = g_gan + torch.autograd.grad(terms["gan"], layer)[0]
        return (g_rec.norm() / (g_gan.norm() + 1e-6)).clamp(0, self.optim.max_d_weight).detach()

    def discriminator_loss(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hinge loss on DiffAug'd 8-bit fakes (the decoder in eval mode: no latent noise) and reals; gradients
        reach the heads only."""
        if self.optim.encoder_rope_rescale is not None:
            z = self.encoder(x)  # `z` is the generator's, from the rescaled RoPE
        with torch.no_grad():
            self.model.eval()
            fakes = to_8bit(self.model(z) * 2 - 1)
            self.model.train()
        self.disc.train()
        fakes, reals = self.augment(fakes), self.augment(x * 2 - 1)  # the reference's order: fakes first
        d_fake, d_real = self.disc(fakes), self.disc(reals)
        return {"disc": hinge_d_loss(d_real, d_fake), "disc_accuracy": (d_real > d_fake).float().mean()}

    def _backward(self, loss: torch.Tensor, sync: bool) -> None:
        """Backward of one micro-batch's share; under DDP, gradients are all-reduced on the last one only."""
        ddp = self.trainer.model
        with ddp.no_sync() if not sync and isinstance(ddp, nn.parallel.DistributedDataParallel) else nullcontext():
            self.manual_backward(loss / self.accumulate)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, torch.Tensor]:
        self._micro.append(self._inputs(batch))
        last = len(self._micro) == self.accumulate
        if self.accumulate > 1 and self.uses_gan:  # the adaptive weight needs the whole batch first
            if not last:
                return {}
            weight = self.batch_adaptive_weight(self._micro)
            for i, (z, x) in enumerate(self._micro):
                out = self.generator_loss(z, x, weight)
                self._watch(out["loss"])
                self._backward(out["loss"], sync=i == len(self._micro) - 1)
        else:
            out = self.generator_loss(*self._micro[-1])
            self._watch(out["loss"])
            self._backward(out["loss"], sync=last)
        terms = {k: v.detach() for k, v in out.items()}
        if not last:
            return terms
        step, opt, sched = self.global_step, self.optimizers(), self.lr_schedulers()
        if self.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
        opt.step()  # the decoder's group: the heads have no gradient (counted: global_step + 1)
        opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        if self.disc is not None and step >= self.optim.disc_upd_start:
            for i, (zi, xi) in enumerate(self._micro):
                d = self.discriminator_loss(zi, xi)
                self._watch(d["disc"])
                self._backward(d["disc"], sync=i == len(self._micro) - 1)
            opt.optimizer.step()  # the heads' group, not counted as a step: the decoder has no gradient now
            opt.zero_grad(set_to_none=True)
            terms.update({k: v.detach() for k, v in d.items()})
        sched.step()
        self._micro.clear()
        self.log("loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=False)
        self.log_dict({k: v for k, v in terms.items() if k != "loss"}, on_step=True, on_epoch=False)
        return terms

    def configure_optimizers(self):
        heads = self.disc.heads.parameters() if self.disc is not None else ()
        opt, sched = build_optimizer(self.optim, self.model.parameters(), heads, int(self.optim.disc_upd_start))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
