"""Ensembles with Shared Representations (ESR).

Siqueira, Magg and Wermter, "Efficient Facial Feature Learning with Wide Ensemble-based
Convolutional Neural Networks", AAAI 2020. A shared base of convolutions feeds an ensemble of
convolutional branches (paper Fig. 1); training minimises the sum of the branches' losses
(eq. 1) and inference is a plurality vote of the branches.

Two architectures (paper Fig. 3):

- ``arch="lab"``: the CK+ network, grayscale 96x96, five 'valid' convolutions each followed
  by BatchNorm and ReLU, 2x2 max-pooling after the 2nd, 3rd and 4th, global average pooling
  and a linear layer. ``level`` L shares the first L convolutions; each branch holds the rest
  and the classifier. Level 0 shares nothing: the branches are independent networks, i.e. the
  traditional ensemble of Table 1.
- ``arch="wild"``: ESR-9 for AffectNet/FER+, RGB 96x96, eight convolutions (four shared) and a
  valence/arousal head per branch: ReLU on the emotion logits, then Linear(classes -> 2).

Unlike the authors' public code, branches live in an ``nn.ModuleList`` so ``to()``, ``eval()``
and ``state_dict()`` reach them, and inference runs without autograd.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from fernb.complexity import eval_mode
from fernb.ensemble import plurality_vote
from fernb.models.contract import deepest_layer, member_index
from fernb.models.sizes import check_sizes, scaled
from fernb.seeding import seeded

# One convolution per row: (out_channels, kernel, padding, max-pool after it).
LAB_LAYERS: tuple[tuple[int, int, int, bool], ...] = (
    (32, 5, 0, False), (64, 3, 0, True), (64, 3, 0, True), (64, 3, 0, True), (64, 3, 0, False),
)
WILD_LAYERS: tuple[tuple[int, int, int, bool], ...] = (
    (64, 5, 0, False), (128, 3, 0, True), (128, 3, 0, False), (128, 3, 0, True),
    (128, 3, 0, False), (256, 3, 0, True), (256, 3, 0, False), (512, 3, 1, False),
)
# arch -> (layers, input channels, paper's branching level, paper's number of branches)
ARCHS: dict[str, tuple[tuple[tuple[int, int, int, bool], ...], int, int, int]] = {
    "lab": (LAB_LAYERS, 1, 3, 4),
    "wild": (WILD_LAYERS, 3, 4, 9),
}


def conv_block(in_chans: int, out_chans: int, kernel: int, padding: int, pool: bool) -> nn.Sequential:
    """Conv2d (with bias) -> BatchNorm2d -> ReLU, then an optional 2x2 max-pool."""
    layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, kernel, padding=padding),
                               nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class Branch(nn.Module):
    """One convolutional branch: the unshared convolutions, global average pooling, the
    emotion classifier ``fc`` and, for ESR-9, the valence/arousal head ``affect``."""

    def __init__(self, blocks: list[nn.Module], n_features: int, n_classes: int,
                 affect: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(n_features, n_classes)
        self.affect = nn.Linear(n_classes, 2) if affect else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))  # (B, C)

    def forward_affect(self, x: torch.Tensor) -> torch.Tensor:
        """Valence and arousal (B, 2) from the ReLU of the emotion logits (paper Fig. 3)."""
        if self.affect is None:
            raise RuntimeError("this branch has no valence/arousal head; use arch='wild'")
        return self.affect(torch.relu(self(x)))


class ESR(nn.Module):
    """Ensemble with Shared Representations.

    Args:
        arch: ``"lab"`` (CK+ network) or ``"wild"`` (ESR-9).
        level: number of shared convolutions, 0 (independent networks) to 5 ("lab") or 8
            ("wild"); None takes the paper's level (3 for "lab", 4 for "wild").
        n_branches: initial number of branches; None takes the paper's (4 "lab", 9 "wild").
        n_classes: emotion classes (8 in the paper).
        width: channel multiplier; 1.0 is the paper's architecture.
        in_chans: input channels; None takes the architecture's (1 "lab", 3 "wild").
        seed: initialisation seed. Branch ``b`` (0-based) starts as the unshared layers of a
            whole network initialised under ``seeded(seed, b)`` and the shared base as the
            first ``level`` layers of network 0, so branches start pairwise different, an ESR
            with one branch is exactly the single network, and branch ``b`` starts exactly
            like network ``b`` of the traditional ensemble (level 0) with the same seed.

    ``forward`` returns emotion logits of shape (batch, branches, classes); the members are
    the branches.
    """

    def __init__(self, *, arch: str = "lab", level: int | None = None, n_branches: int | None = None,
                 n_classes: int = 8, width: float = 1.0, in_chans: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
        layers, default_chans, default_level, default_branches = ARCHS[arch]
        level = default_level if level is None else level
        n_branches = default_branches if n_branches is None else n_branches
        in_chans = default_chans if in_chans is None else in_chans
        if not 0 <= level <= len(layers):
            raise ValueError(f"level must be in [0, {len(layers)}] for arch={arch!r}, got {level}")
        if n_branches < 1:
            raise ValueError(f"n_branches must be at least 1, got {n_branches}")
        check_sizes(n_classes=n_classes, in_chans=in_chans, width=width)
        self.arch, self.level, self.n_classes = arch, level, n_classes
        self._layers = tuple((scaled(c, width), k, p, pool) for c, k, p, pool in layers)
        self._in_chans = in_chans
        self.seed = seed
        with seeded(seed, 0):
            self.base = nn.Sequential(*self._blocks(0, len(self._layers))[:level])
        self.branches = nn.ModuleList()
        for _ in range(n_branches):
            self.add_branch()

    def _blocks(self, start: int, stop: int) -> list[nn.Module]:
        chans = [self._in_chans] + [c for c, _, _, _ in self._layers]
        return [conv_block(chans[i], c, k, p, pool)
                for i, (c, k, p, pool) in enumerate(self._layers[start:stop], start)]

    def _new_branch(self, index: int) -> Branch:
        with seeded(self.seed, index):
            blocks = self._blocks(0, len(self._layers))[self.level:]
            return Branch(blocks, self._layers[-1][0], self.n_classes,
                          affect=self.arch == "wild")

    def add_branch(self, init: str = "fresh") -> Branch:
        """Append a branch (Algorithm 1, "initialize the convolutional branch B_b").

        Args:
            init: ``"fresh"`` draws new random weights (the paper's Algorithm 1 and the
                authors' code) from the branch's own stream (see ``seed``); ``"same"``
                gives every added branch one and the same initial draw (the stream of branch
                1), the control that shows what distinct starts add to diversity; ``"copy"``
                starts from a copy of the last branch, trained weights included.
        """
        if init in ("fresh", "same"):
            index = len(self.branches) if init == "fresh" else min(len(self.branches), 1)
            branch = self._new_branch(index)
            device = next(self.parameters(), torch.empty(0)).device
            branch.to(device)
        elif init == "copy":
            if not len(self.branches):
                raise ValueError("init='copy' needs an existing branch to copy")
            branch = copy.deepcopy(self.branches[-1])
        else:
            raise ValueError(f"init must be 'fresh', 'same' or 'copy', got {init!r}")
        self.branches.append(branch)
        return branch

    def reset_classifier(self, n_classes: int) -> None:
        """Replace every branch's emotion classifier (and affect head) for ``n_classes``."""
        self.n_classes = n_classes
        for branch in self.branches:
            branch.fc = nn.Linear(branch.fc.in_features, n_classes).to(branch.fc.weight.device)
            if branch.affect is not None:
                branch.affect = nn.Linear(n_classes, 2).to(branch.fc.weight.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared representation: the base's feature maps (B, C', H', W')."""
        if x.ndim != 4 or x.shape[1] != self._in_chans:
            raise ValueError(f"expected input (batch, {self._in_chans}, H, W), got {tuple(x.shape)}")
        return self.base(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Every branch on the shared features: (B, M, C) emotion logits."""
        return torch.stack([branch(features) for branch in self.branches], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, M, C)

    def cam_layer(self, member: int = 0, image_size: int | None = None) -> nn.Module:
        """The convolution block Grad-CAM explains for branch ``member`` (paper Fig. 5): the
        deepest block on its path (shared base, then the branch) whose output is at least
        :data:`~fernb.models.contract.MIN_CAM_SIZE` pixels wide at ``image_size``. At 96x96
        that is the last convolution (7x7 on the CK+ network), as in the paper; at 48x48 the
        last one is 1x1, so the map comes from the third (9x9). None: the last block."""
        branch = self.branches[member_index(member, len(self.branches))]
        return deepest_layer(self, [*self.base, *branch.features], self._in_chans, image_size)

    def forward_affect(self, x: torch.Tensor, n_branches: int | None = None) -> torch.Tensor:
        """Valence and arousal per branch: (B, M, 2) (ESR-9 only); ``n_branches`` limits it
        to the first branches (affect fine-tuning trains them one at a time)."""
        features = self.forward_features(x)
        branches = self.branches[:n_branches]
        return torch.stack([branch.forward_affect(features) for branch in branches], 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble emotion (B,): plurality vote of the branches, in eval mode."""
        with eval_mode(self):
            return plurality_vote(self(x))

    @torch.no_grad()
    def predict_affect(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble valence and arousal (B, 2): mean over the branches, in eval mode."""
        with eval_mode(self):
            return self.forward_affect(x).mean(1)


def single_network(*, n_classes: int = 8, width: float = 1.0, in_chans: int = 1,
                   seed: int = 0) -> ESR:
    """The CK+ single-network baseline (Table 1: 131,208 parameters); members = 1."""
    return ESR(arch="lab", level=0, n_branches=1, n_classes=n_classes, width=width,
               in_chans=in_chans, seed=seed)


def traditional_ensemble(*, n_networks: int = 4, n_classes: int = 8, width: float = 1.0,
                         in_chans: int = 1, seed: int = 0) -> ESR:
    """Independent networks, i.e. an ESR at level 0 (Table 1: 524,832 parameters for four)."""
    return ESR(arch="lab", level=0, n_branches=n_networks, n_classes=n_classes, width=width,
               in_chans=in_chans, seed=seed)


def esr4(*, level: int = 3, n_classes: int = 8, width: float = 1.0, in_chans: int = 1,
         seed: int = 0) -> ESR:
    """ESR-4 on the CK+ network (Table 1: 355,104 parameters at level 3, 243,936 at 4)."""
    return ESR(arch="lab", level=level, n_branches=4, n_classes=n_classes, width=width,
               in_chans=in_chans, seed=seed)


def esr9(*, n_classes: int = 8, width: float = 1.0, in_chans: int = 3, seed: int = 0) -> ESR:
    """ESR-9 for in-the-wild data (about 20.35M parameters; the paper says about 20M)."""
    return ESR(arch="wild", level=4, n_branches=9, n_classes=n_classes, width=width,
               in_chans=in_chans, seed=seed)
