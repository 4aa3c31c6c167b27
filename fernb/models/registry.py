"""One small instance of every model :mod:`fernb.models` builds, for the model contract.

:data:`MODELS` maps a name to a :class:`ModelCase`: the public class or builder it exercises,
a function that builds it narrow and with 3 classes, and the shape of one input at which it
runs on a CPU in well under a second. ``tests/test_model_contract.py`` runs the contract (see
:mod:`fernb.models`) on every case and checks that every public builder and model class of
:mod:`fernb.models` has one, so a new model cannot skip it. :data:`COMPONENTS` are the public
``nn.Module`` classes and functions that make building blocks of models, not models.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from fernb.models.backbones import (Backbone, VGGFaceInput, build_backbone, densenet121,
                                    resnet18, resnet34, vgg16)
from fernb.models.esr import (ESR, Branch, conv_block, esr4, esr9, single_network,
                              traditional_ensemble)
from fernb.models.faml import AttentionBlock, FacialAreaFusion, r18_faml
from fernb.models.members import Members
from fernb.models.parts import (FeatureExtractor, PartNetwork, Standardize, expression_network,
                                part_ensemble)
from fernb.models.relevance import BaselineCNN, EBlock, FacialParts, RelevanceNet, Representation
from fernb.models.softlabels import Network

N_CLASSES = 3
VGG_WIDTH = 0.0625


@dataclass(frozen=True)
class ModelCase:
    """A model of the contract test.

    Args:
        builder: the public class or function of :mod:`fernb.models` it exercises.
        build: makes a fresh instance.
        input_shape: (channels, height, width) of one input; height is the ``image_size``
            given to ``cam_layer``.
        other_heads: names of sub-modules that ``forward`` does not use, because they give
            another output (ESR-9's valence/arousal ``affect`` heads, a part network's
            ``landmark_head``); their parameters get no gradient from the logits.
    """

    builder: Callable[..., Any]
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    other_heads: tuple[str, ...] = ()


def _case(builder: Callable[..., nn.Module], input_shape: tuple[int, int, int], *,
          other_heads: tuple[str, ...] = (), **kwargs: Any) -> ModelCase:
    return ModelCase(builder, partial(builder, n_classes=N_CLASSES, **kwargs), input_shape,
                     other_heads)


def _vgg() -> Backbone:
    return vgg16(n_classes=N_CLASSES, width=VGG_WIDTH, batch_norm=True)


def _resnet_members() -> Members:
    return Members.build(partial(resnet18, n_classes=N_CLASSES, width=0.0625), 2, seed=0)


def _one_member() -> nn.Module:
    return part_ensemble("baseline", n_networks=3, n_classes=N_CLASSES, width=0.125).member(1)


def _expression_ensemble() -> nn.Module:
    return expression_network(part_ensemble("el", n_classes=N_CLASSES, width=0.125))


def _expression_network() -> nn.Module:
    return expression_network(PartNetwork(part="eyes", n_classes=N_CLASSES, width=0.125))


def _plain_network() -> Network:
    return Network(_vgg(), face_input=False)


def _face_network() -> Network:
    return Network(vgg16(n_classes=N_CLASSES, width=VGG_WIDTH), face_input=True)


RELEVANCE = dict(image_size=48, width=0.125, hidden=(16, 16))
LANDMARKS = ("landmark_head",)

MODELS: dict[str, ModelCase] = {
    # ESR (Siqueira et al.): 48 px takes the CAM layer from the base, 96 px from the branches.
    "single_network": _case(single_network, (1, 48, 48), width=0.125),
    "traditional_ensemble": _case(traditional_ensemble, (1, 48, 48), n_networks=3,
                                  width=0.125),
    "esr4": _case(esr4, (1, 48, 48), width=0.125),
    "esr-lab-level1": _case(ESR, (1, 96, 96), arch="lab", level=1, n_branches=2, width=0.125),
    "esr9": _case(esr9, (3, 96, 96), width=0.0625, other_heads=("affect",)),
    # Relevance maps (Gund et al.)
    "baseline_cnn": _case(BaselineCNN, (1, 48, 48), **RELEVANCE),
    "relevance_net": _case(RelevanceNet, (1, 48, 48), **RELEVANCE),
    # FLL-to-FER part networks (Wadhawan and Gandhi)
    "part_network": _case(PartNetwork, (3, 32, 32), part="mouth", width=0.125,
                          other_heads=LANDMARKS),
    "part_network-standardized": _case(PartNetwork, (3, 32, 32), part="full", width=0.125,
                                       standardize=True, other_heads=LANDMARKS),
    "part_ensemble-el": _case(part_ensemble, (3, 32, 32), kind="el", width=0.125,
                              other_heads=LANDMARKS),
    "part_ensemble-ftl": _case(part_ensemble, (3, 32, 32), kind="ftl", n_networks=2,
                               width=0.125, other_heads=LANDMARKS),
    "part_ensemble-baseline": _case(part_ensemble, (3, 32, 32), kind="baseline", n_networks=2,
                                    width=0.125),
    "expression_network": ModelCase(expression_network, _expression_network, (3, 32, 32)),
    "expression_network-el": ModelCase(expression_network, _expression_ensemble, (3, 32, 32)),
    "members-member": ModelCase(Members.member, _one_member, (3, 32, 32)),
    # Soft labels (Gan et al.): VGG16, and VGG16 with VGG-Face's input
    "softlabels-network": ModelCase(Network, _plain_network, (3, 32, 32)),
    "softlabels-network-vggface": ModelCase(Network, _face_network, (3, 32, 32)),
    # R18+FAML (Zhou et al.) and the backbones
    "r18_faml": _case(r18_faml, (3, 48, 48), width=0.125),
    "r18_faml-plain": _case(r18_faml, (3, 48, 48), width=0.125, fusion=False, attention=False),
    "resnet18": _case(resnet18, (3, 32, 32), width=0.0625),
    "resnet34": _case(resnet34, (1, 32, 32), width=0.0625, in_chans=1),
    "vgg16": _case(vgg16, (3, 32, 32), width=VGG_WIDTH),
    "densenet121": _case(densenet121, (3, 32, 32), width=0.125),
    "build_backbone": _case(build_backbone, (3, 32, 32), name="vgg16", width=VGG_WIDTH,
                            batch_norm=True),
    "members-resnet18": ModelCase(Members.build, _resnet_members, (3, 32, 32)),
}

COMPONENTS: tuple[Callable[..., nn.Module], ...] = (
    Branch, conv_block, FeatureExtractor, Standardize, AttentionBlock, FacialAreaFusion,
    EBlock, Representation, FacialParts, VGGFaceInput)
