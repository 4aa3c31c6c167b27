"""Models: every forward returns logits of shape (batch, members, classes).

The model contract. Every model this package builds (:data:`fernb.models.registry.MODELS`
lists one small instance of each, and ``tests/test_model_contract.py`` checks them all)
provides, as :class:`fernb.models.contract.Model` states:

- ``forward(x) -> (B, M, C)`` logits; a single network has M = 1, an ensemble one member per
  branch (ESR) or network (:class:`Members`).
- ``forward_features(x)`` and ``forward_head(features)``, with
  ``forward_head(forward_features(x))`` equal to ``forward(x)``. The features are what the
  model computes before its head(s): ESR's shared representation (the base's maps, which
  every branch reads), a network's last feature map or vector, and for :class:`Members` a
  tuple of each network's features.
- ``cam_layer(member: int = 0, image_size: int | None = None) -> nn.Module``: the sub-module
  whose (B, C, H, W) output Grad-CAM weighs when it explains ``member`` on square inputs of
  ``image_size`` pixels (:func:`fernb.explain.gradcam` takes it by default). A method, not an
  attribute, because the layer can depend on both: an ESR branch's map comes from its own
  path (shared base, then the branch), and ESR and FAML take the deepest layer whose output
  is at least :data:`~fernb.models.contract.MIN_CAM_SIZE` cells wide at that size (at 96 px
  ESR's last convolution, as the paper; at 48 px the third). ``image_size=None`` gives the
  paper's layer, the deepest. Other models have one layer whatever the size. A model with one
  member accepts ``member`` 0 (or -1) only; an out-of-range member is a ``ValueError``.

Building blocks (an ESR branch, the facial-parts encoder-decoder, VGG16's frozen base, ...)
are not models and need not follow the contract; the registry names them.
"""
from fernb.models.backbones import (Backbone, build_backbone, densenet121, resnet18, resnet34,
                                    vgg16)
from fernb.models.contract import MIN_CAM_SIZE, Model
from fernb.models.esr import ESR, esr4, esr9, single_network, traditional_ensemble
from fernb.models.faml import FAML, r18_faml
from fernb.models.members import Members
from fernb.models.parts import PartNetwork, expression_network, part_ensemble
from fernb.models.relevance import BaselineCNN, RelevanceNet

__all__ = ["ESR", "FAML", "MIN_CAM_SIZE", "Backbone", "BaselineCNN", "Members", "Model",
           "PartNetwork", "RelevanceNet", "build_backbone", "densenet121", "esr4", "esr9",
           "expression_network", "part_ensemble", "r18_faml", "resnet18", "resnet34",
           "single_network", "traditional_ensemble", "vgg16"]
