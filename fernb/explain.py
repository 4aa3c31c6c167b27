"""Grad-CAM saliency for ensemble members and whole ensembles, and scores against evidence masks.

Grad-CAM (Selvaraju et al., 2017; restated as Wadhawan & Gandhi eqs. 5-6) weights a layer's
feature maps by their spatially averaged gradients of the class score and keeps the positive
part. ESR (Siqueira et al., 2020, Fig. 5 right) shows one map per branch; Wadhawan & Gandhi
(Sec. V) one per part sub-network; Zhou et al. (Fig. 8) one per model and decision rule.

fernb models return logits (B, M, C); pytorch-grad-cam expects (B, C), so :class:`MemberOutput`
and :class:`EnsembleOutput` adapt one to the other. Maps are (B, H, W) float32 in [0, 1] at
the input's size, each normalised by its own minimum and maximum. By default a member's map
comes from the model's own ``cam_layer(member, image_size)`` (the model contract of
:mod:`fernb.models`).

The scores compare a map with a binary evidence mask (the facial regions that carry the
expression): :func:`evidence_score` is the share of the map's mass inside the mask,
:func:`pointing_game` whether its peak falls inside (Zhang et al., 2016), and
:func:`chance_level` what a map without information scores on both (the mask's area share).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fernb.complexity import eval_mode

REDUCTIONS = ("sum_logits", "mean_softmax")

Layers = nn.Module | Sequence[nn.Module]


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 3:
        raise ValueError(f"the model must return logits of shape (batch, members, classes); got "
                         f"{tuple(logits.shape)}. Give a single network a members axis of 1.")
    return logits


class MemberOutput(nn.Module):
    """The logits (B, C) of one member (branch or network) of a (B, M, C) model."""

    def __init__(self, model: nn.Module, member: int) -> None:
        super().__init__()
        self.model = model
        self.member = member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = _check_logits(self.model(x))  # (B, M, C)
        if not -logits.shape[1] <= self.member < logits.shape[1]:
            raise ValueError(f"member {self.member} out of range for {logits.shape[1]} members")
        return logits[:, self.member]  # (B, C)


class EnsembleOutput(nn.Module):
    """One (B, C) score per class for a whole (B, M, C) ensemble.

    ``"sum_logits"`` sums the members' pre-softmax scores, keeping Grad-CAM's use of the score
    before the softmax (Wadhawan eq. 5); ``"mean_softmax"`` averages their probabilities (the
    soft-vote rule), whose gradients shrink as members grow confident.
    """

    def __init__(self, model: nn.Module, reduce: str = "sum_logits") -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}")
        self.model = model
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = _check_logits(self.model(x))  # (B, M, C)
        if self.reduce == "sum_logits":
            return logits.sum(dim=1)
        return logits.softmax(dim=-1).mean(dim=1)  # (B, C)


def gradcam(model: nn.Module, images: torch.Tensor, target_layers: Layers | None = None, *,
            member: int | None = None, targets: int | Sequence[int] | None = None,
            reduce: str = "sum_logits") -> np.ndarray:
    """Grad-CAM maps of one member or of the whole ensemble.

    Several target layers (e.g. the last convolution of every network of a traditional
    ensemble) give the mean of their normalised maps, as pytorch-grad-cam does. Hooks are
    removed, gradients cleared and every sub-module's train/eval mode restored afterwards.

    Args:
        model: returns logits (B, M, C).
        images: (B, C_in, H, W) float tensor, as the model takes it.
        target_layers: a sub-module of ``model`` or a sequence of them; None takes the
            model's ``cam_layer(member, image_size)`` for ``member``, or every member's (each
            layer once) for the ensemble.
        member: the member whose class score is explained; None for the ensemble.
        targets: class index per image (or one for all); by default the class predicted by
            that member, or by the ensemble under ``reduce``.
        reduce: how the ensemble scores classes when ``member`` is None (see
            :class:`EnsembleOutput`).

    Returns:
        (B, H, W) float32 maps in [0, 1].
    """
    _check_images(images)
    wrapper = EnsembleOutput(model, reduce) if member is None else MemberOutput(model, member)
    with eval_mode(model):
        members, classes = _probe(model, images)
        if member is not None and not -members <= member < members:
            raise ValueError(f"member {member} out of range for a model with {members} members")
        if target_layers is None:
            target_layers = _cam_layers(model, range(members) if member is None else [member],
                                        images.shape[-1])
        layers = _check_layers(model, target_layers)
        class_targets = _class_targets(targets, len(images), classes)
        try:
            with GradCAM(model=wrapper, target_layers=layers) as cam:
                maps = cam(input_tensor=images.detach().clone().requires_grad_(True),
                           targets=class_targets)
        finally:
            model.zero_grad(set_to_none=True)
    return maps.astype(np.float32)


def branch_maps(model: nn.Module, images: torch.Tensor,
                layer_fn: Callable[[int], Layers] | None = None, *,
                targets: int | Sequence[int] | None = None) -> np.ndarray:
    """One Grad-CAM map per member, as in ESR Fig. 5 (right).

    Args:
        model: returns logits (B, M, C).
        images: (B, C_in, H, W) float tensor.
        layer_fn: member index -> that member's target layer(s); None takes the model's
            ``cam_layer(m, image_size)``.
        targets: class index per image (or one for all), shared by every member, e.g. the
            true labels or the ensemble's prediction; by default each member explains its
            own predicted class.

    Returns:
        (M, B, H, W) float32 maps in [0, 1].
    """
    _check_images(images)
    with eval_mode(model):
        members, _ = _probe(model, images)
    return np.stack([gradcam(model, images, None if layer_fn is None else layer_fn(m), member=m,
                             targets=targets)
                     for m in range(members)])


def union_map(maps: np.ndarray) -> np.ndarray:
    """Pixel-wise maximum over members of (M, B, H, W) maps, renormalised to [0, 1]: (B, H, W)."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps must be (members, batch, H, W) as from branch_maps; got "
                         f"shape {maps.shape}")
    return scale_cam_image(maps.max(axis=0))


def overlay(gray_image: np.ndarray | torch.Tensor, cam: np.ndarray,
            alpha: float = 0.5) -> np.ndarray:
    """A grayscale face with a jet-coloured map on top, via ``show_cam_on_image``.

    Args:
        gray_image: (H, W) or (1, H, W) face, uint8 in [0, 255] or float in [0, 1].
        cam: (H, W) map in [0, 1].
        alpha: opacity of the map, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    image = np.asarray(gray_image.detach().cpu() if isinstance(gray_image, torch.Tensor)
                       else gray_image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    cam = np.asarray(cam, dtype=np.float32)
    if image.ndim != 2 or cam.shape != image.shape:
        raise ValueError(f"need a (H, W) grayscale image and a map of the same size; got "
                         f"{image.shape} and {cam.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    if cam.min() < 0.0 or cam.max() > 1.0:
        raise ValueError("cam must lie in [0, 1], as gradcam returns it")
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if image.min() < 0.0 or image.max() > 1.0:
        raise ValueError("a float image must lie in [0, 1]; pass uint8 for 0-255 values")
    rgb = np.repeat(image[..., None], 3, axis=-1)
    return show_cam_on_image(rgb, cam, use_rgb=True, image_weight=1.0 - alpha)


def evidence_score(cam: np.ndarray, mask: np.ndarray) -> float | np.ndarray:
    """Share of the map's mass inside the evidence mask: ``sum(cam * mask) / sum(cam)``.

    Args:
        cam: (H, W) or (B, H, W) non-negative map(s).
        mask: binary mask(s) of the same shape (1 = the expression shows here).

    Returns:
        A float for one map, a (B,) array for a batch; NaN where the score is undefined: an
        all-zero map (no mass) or an empty mask (no evidence region, e.g. a neutral face).
        Average with ``np.nanmean``; compare with :func:`chance_level`.
    """
    cam, mask = _check_pair(cam, mask)
    mass = cam.sum(axis=(-2, -1))
    inside = (cam * mask).sum(axis=(-2, -1))
    defined = (mass > 0) & mask.any(axis=(-2, -1))
    return _unbatch(np.where(defined, inside / np.where(mass > 0, mass, 1.0), np.nan), cam)


def pointing_game(cam: np.ndarray, mask: np.ndarray) -> float | np.ndarray:
    """Whether the map's peak lies inside the mask: 1.0 for a hit, 0.0 for a miss.

    A hit needs every pixel that attains the maximum inside the mask, so a flat plateau
    cannot hit by touching the region.

    Args:
        cam: (H, W) or (B, H, W) map(s).
        mask: binary mask(s) of the same shape.

    Returns:
        A float for one map, a (B,) array for a batch; NaN for a constant map (no peak) or an
        empty mask. The hit rate is ``np.nanmean``; compare with :func:`chance_level`.
    """
    cam, mask = _check_pair(cam, mask)
    peak = cam == cam.max(axis=(-2, -1), keepdims=True)
    hit = ~(peak & ~mask).any(axis=(-2, -1))
    constant = cam.max(axis=(-2, -1)) == cam.min(axis=(-2, -1))
    defined = ~constant & mask.any(axis=(-2, -1))
    return _unbatch(np.where(defined, hit.astype(float), np.nan), cam)


def chance_level(mask: np.ndarray) -> float | np.ndarray:
    """The mask's area share: the evidence score of a uniform map and the hit rate of a
    uniformly random peak. A float for one (H, W) mask, a (B,) array for (B, H, W)."""
    mask = _check_mask(np.asarray(mask))
    return _unbatch(mask.mean(axis=(-2, -1)), mask)


def _cam_layers(model: nn.Module, members: Sequence[int], image_size: int) -> list[nn.Module]:
    """The model's Grad-CAM layer of each of ``members``, each layer once."""
    if not callable(getattr(model, "cam_layer", None)):
        raise TypeError(f"{type(model).__name__} has no cam_layer; pass target_layers")
    layers: list[nn.Module] = []
    for m in members:
        layer = model.cam_layer(m, image_size)
        if all(layer is not seen for seen in layers):
            layers.append(layer)
    return layers


def _check_layers(model: nn.Module, target_layers: Layers) -> list[nn.Module]:
    layers = [target_layers] if isinstance(target_layers, nn.Module) else list(target_layers)
    if not layers:
        raise ValueError("target_layers is empty; pass e.g. the last convolution of a branch")
    modules = {id(module) for module in model.modules()}
    for layer in layers:
        if not isinstance(layer, nn.Module) or id(layer) not in modules:
            raise ValueError(f"target layer {layer!r} is not a sub-module of the model")
    return layers


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError("images must be a float tensor of shape (B, C, H, W); got "
                        f"{getattr(images, 'dtype', type(images))} "
                        f"{tuple(getattr(images, 'shape', ()))}")
    if len(images) == 0:
        raise ValueError("images is an empty batch")


def _probe(model: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """Members and classes of the model, from one image."""
    parameter = next(model.parameters(), None)
    device = images.device if parameter is None else parameter.device
    with torch.no_grad():
        logits = _check_logits(model(images[:1].to(device)))
    return logits.shape[1], logits.shape[2]


def _class_targets(targets: int | Sequence[int] | None, batch: int,
                   classes: int) -> list[ClassifierOutputTarget] | None:
    if targets is None:
        return None
    values = np.broadcast_to(np.asarray(targets), (batch,)) if np.ndim(targets) == 0 \
        else np.asarray(targets)
    if values.shape != (batch,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"targets must be one class index or {batch} of them (one per image); "
                         f"got {targets!r}")
    if values.min() < 0 or values.max() >= classes:
        raise ValueError(f"targets must be class indices in [0, {classes}); got {values.tolist()}")
    return [ClassifierOutputTarget(int(value)) for value in values]


def _check_mask(mask: np.ndarray) -> np.ndarray:
    if mask.ndim not in (2, 3) or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask must be binary (0/1 or bool) of shape (H, W) or (B, H, W); got "
                         f"{mask.dtype} {mask.shape}")
    return mask.astype(bool)


def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), _check_mask(np.asarray(mask))
    if cam.shape != mask.shape:
        raise ValueError(f"cam {cam.shape} and mask {mask.shape} must have the same shape; "
                         "compute maps at the mask's resolution")
    if not np.isfinite(cam).all() or cam.min() < 0:
        raise ValueError("cam must be finite and non-negative, as gradcam returns it")
    return cam, mask


def _unbatch(values: np.ndarray, like: np.ndarray) -> float | np.ndarray:
    return float(values) if like.ndim == 2 else values

