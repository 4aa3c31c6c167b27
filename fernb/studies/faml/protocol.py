"""The chapter's plan: every network it trains as a stored job (:mod:`fernb.store`; the jobs'
run functions are in :mod:`.jobs`), and the results read back from the store.

Every network of the *default* regime is fine-tuned from one *shared start*, as in the paper,
where all networks are the same pre-trained ResNet-18 and differ by "random loss, initial
weights of FC, data-flipping" (Sec. 3.3): a pre-trained R18 (the paper's MS-Celeb-1M file when
``weights`` names one; otherwise a narrow R18 pre-trained here on ``synth-lab``), to which
R18+FA and FAML add their facial-area convolutions (copies of the first convolution) and one
common draw of the attention blocks (the same for R18+FA and FAML, so that they differ by the
loss only). Eq. (9) needs this start: averaging the kernels of networks from independent
random starts mixes unrelated channels. Each network's classifier, batch order, flips and
loss draws come from its own seed, derived from the run's seed, the regime, the model's name,
the replicate and the network's index, so no two networks of the chapter share one.

Models of the default regime, ``n_networks`` networks each in every replicate: R18
(cross-entropy), R18+FA (the FA network, cross-entropy), FAML (the FA network, the multiple
losses), each extra Table 6 backbone (its own pre-trained start, cross-entropy), FAML-FGA
(Algorithm 1: ``n_networks`` fused children per generation, drawn from the FAML networks by
their training losses) and its control, *FAML trained on*: for each fused child, its main
parent trained again with the child's schedule and seed, without fusion. A child and its
control differ only by the kernel averaging.

The *mechanism* regime trains two ensembles of ``mechanism_networks`` plain R18 members from
the same start, member k of both on the same random half of the training subjects with the
same seed: *CE* members with plain cross-entropy and *LSR* members with label smoothing, so
the two ensembles differ by the members' confidence only.

Choices beyond the paper, each a parameter: the book's stand-in for the MS-Celeb-1M
pre-training is supervised training on ``synth-lab`` (SGD, lr ``pretrain_lr``, momentum 0.9,
weight decay 5e-4, cosine annealing, horizontal flips), the only face data a CPU run has.
Nothing is selected on validation data (the paper trains until the training loss is stable),
so the validation subjects of the split train too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from fernb.data.datasets import DataSpec, FaceDataset
from fernb.device import computed_precision
from fernb.fga import TwoPhase
from fernb.seeding import derive_seed
from fernb.store import Job, Store
from fernb.studies.faml.jobs import (Faces, Loss, Net, Recipe, load_network, pretrain,
                                     train_child, train_network)
from fernb.studies.faml.settings import PRETRAIN_DATASET, TABLE6_BACKBONES, Settings

DEFAULT, MECHANISM = "default", "mechanism"
FGA, CONTROL = "FAML-FGA", "FAML trained on"
# Models of the default regime whose networks are fine-tuned from the R18 start.
R18_MODELS = ("R18", "R18+FA", "FAML")
CE, LSR = "CE", "LSR"
VERSION = 1


def data_spec(s: Settings) -> DataSpec:
    """The default regime's faces (3 channels, as the ResNets take them)."""
    if s.dataset in ("synth-wild", "synth-lab"):
        return DataSpec.of(s.dataset, size=s.image_size, n_subjects=s.n_subjects, seed=s.seed,
                           channels=3)
    return DataSpec.of(s.dataset, s.data_root, size=s.image_size, seed=s.seed, channels=3)


def mechanism_spec(s: Settings) -> DataSpec:
    """The mechanism regime's faces: structured blends, weaker intensities, no label noise."""
    return DataSpec.of(s.mechanism_preset, size=s.image_size,
                       n_subjects=s.mechanism_subjects + s.mechanism_test_subjects,
                       seed=derive_seed(s.seed, MECHANISM) % 2**31, channels=3,
                       blend_pairs="facs", blend_prob=s.mechanism_blend,
                       intensity=tuple(s.mechanism_intensity), label_noise=0.0)


def n_classes(spec: DataSpec) -> int:
    return spec.load().n_classes


def phases(s: Settings) -> TwoPhase:
    return TwoPhase(lr1=s.lr1, lr2=s.lr2, max_epochs1=s.max_epochs1, epochs2=s.epochs2,
                    step_size=s.step_size, window=s.stable_window, loss_tol=s.stable_loss,
                    acc_tol=s.stable_accuracy)


@dataclass
class Plan:
    """Every job of a run: the pre-trainings by architecture, and the networks of each
    regime by (model, replicate), in their order."""

    settings: Settings
    pretrain: dict[str, Job] = field(default_factory=dict)
    networks: dict[tuple[str, str, int], list[Job]] = field(default_factory=dict)

    def jobs(self) -> list[Job]:
        return [*self.pretrain.values(), *(j for jobs in self.networks.values() for j in jobs)]

    def models(self, regime: str) -> list[str]:
        return list(dict.fromkeys(m for g, m, _ in self.networks if g == regime))


def _pretrain_job(arch: str, s: Settings) -> Job:
    faces = Faces(DataSpec.of(PRETRAIN_DATASET, size=s.image_size,
                              n_subjects=s.pretrain_subjects, seed=s.seed, channels=3),
                  seed=s.seed)
    spec = {"faces": faces, "net": Net(arch, width=s.width, n_classes=n_classes(faces.data)),
            "epochs": s.pretrain_epochs, "lr": s.pretrain_lr, "batch_size": s.batch_size,
            "augment": s.augment, "precision": computed_precision(s.precision, s.device),
            "seed": derive_seed(s.seed, "pretrain", arch)}
    return Job("faml.pretrain", spec, pretrain, label=f"{arch} pre-trained on synth-lab",
               version=VERSION, runtime={"device": s.device})


def plan(s: Settings) -> Plan:
    """The run's jobs (nothing is trained here)."""
    out = Plan(s)
    archs = {"R18": "resnet18", **{b: TABLE6_BACKBONES[b] for b in s.backbones}}
    files = {"R18": s.weights, **{b: s.backbone_weights.get(b, "") for b in s.backbones}}
    for name, arch in archs.items():
        if not files[name] and arch not in out.pretrain:
            out.pretrain[arch] = _pretrain_job(arch, s)

    def start(model: str) -> tuple[str, tuple[Job, ...]]:
        key = "R18" if model in R18_MODELS else model
        if files[key]:
            return files[key], ()
        return "pretrained", (out.pretrain[archs[key]],)

    faces = Faces(data_spec(s), seed=s.seed)
    classes = n_classes(faces.data)
    recipe = Recipe(lr=s.lr1, phases=phases(s), batch_size=s.batch_size, augment=s.augment,
                    precision=computed_precision(s.precision, s.device))
    nets = {"R18": Net(width=s.width, n_classes=classes),
            "R18+FA": Net(fusion=True, attention=True, width=s.width, n_classes=classes),
            "FAML": Net(fusion=True, attention=True, width=s.width, n_classes=classes),
            **{b: Net(TABLE6_BACKBONES[b], width=s.width, n_classes=classes)
               for b in s.backbones}}
    losses = {m: Loss(0.0, s.epsilon, s.class_weighted) for m in nets}
    losses["FAML"] = Loss(s.p_lsr, s.epsilon, s.class_weighted)
    for r in range(s.replicates):
        for model, net in nets.items():
            where, needs = start(model)
            variant = "FA" if net.fusion else model  # R18+FA and FAML share their start
            jobs = []
            for k in range(1, s.n_networks + 1):
                spec = {"faces": faces, "net": net, "loss": losses[model], "recipe": recipe,
                        "start": where, "start_seed": derive_seed(s.seed, "start", variant),
                        "seed": derive_seed(s.seed, DEFAULT, model, r, k)}
                jobs.append(Job("faml.network", spec, train_network, needs,
                                label=f"{model} network {k} (replicate {r + 1})",
                                version=VERSION, runtime={"device": s.device}))
            out.networks[(DEFAULT, model, r)] = jobs
        population = out.networks[(DEFAULT, "FAML", r)]
        for g in range(1, s.fga_generations + 1):
            children: dict[str, list[Job]] = {FGA: [], CONTROL: []}
            for i in range(s.n_networks):
                for name, fused in ((FGA, True), (CONTROL, False)):
                    spec = {"faces": faces, "net": nets["FAML"], "loss": losses["FAML"],
                            "recipe": recipe, "n_children": s.n_networks, "child": i,
                            "fused": fused, "generation": g,
                            "draw_seed": derive_seed(s.seed, "fga", r, g),
                            "seed": derive_seed(s.seed, "fga", r, g, i)}
                    children[name].append(Job(
                        "faml.fga", spec, train_child, tuple(population),
                        label=f"{name} network {i + 1} (generation {g}, replicate {r + 1})",
                        version=VERSION, runtime={"device": s.device}))
            population = children[FGA]
        out.networks[(DEFAULT, FGA, r)] = children[FGA]
        out.networks[(DEFAULT, CONTROL, r)] = children[CONTROL]
    _mechanism(out, s, files["R18"] or "pretrained",
               () if s.weights else (out.pretrain["resnet18"],))
    return out


def _mechanism(out: Plan, s: Settings, where: str, needs: tuple[Job, ...]) -> None:
    data = mechanism_spec(s)
    net = Net(width=s.width, n_classes=n_classes(data))
    recipe = Recipe(lr=s.lr1, epochs=s.mechanism_epochs, batch_size=s.batch_size,
                    augment=s.augment, precision=computed_precision(s.precision, s.device))
    for name, loss in ((CE, Loss(0.0)), (LSR, Loss(1.0, s.mechanism_epsilon))):
        jobs = []
        for k in range(1, s.mechanism_networks + 1):
            faces = Faces(data, "subjects", seed=s.seed, test_subjects=s.mechanism_test_subjects,
                          half=derive_seed(s.seed, MECHANISM, "half", k))
            spec = {"faces": faces, "net": net, "loss": loss, "recipe": recipe, "start": where,
                    "start_seed": derive_seed(s.seed, "start", "R18"),
                    "seed": derive_seed(s.seed, MECHANISM, k)}  # the same for CE and LSR
            jobs.append(Job("faml.network", spec, train_network, needs,
                            label=f"{name} member {k}", version=VERSION,
                            runtime={"device": s.device}))
        out.networks[(MECHANISM, name, 0)] = jobs


# ----------------------------------------------------------------------------- results

@dataclass
class Regime:
    """One regime's trained networks read back from the store.

    Attributes:
        logits: (model, replicate) -> (N, M, C) test logits of its networks.
        labels: (N,) test labels; test: the test faces.
        histories: (model, replicate) -> each network's per-epoch training history.
        networks: one row per network: model, replicate, network (1-based), the summary the
            store keeps (training loss, phases, accuracy, seconds...) and its job.
    """

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    logits: dict[tuple[str, int], np.ndarray]
    histories: dict[tuple[str, int], list[pd.DataFrame]]
    networks: pd.DataFrame
    test: FaceDataset
    train_counts: np.ndarray  # (C,) training faces per class (the first network's)

    def models(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.logits))

    def replicates(self, model: str) -> list[int]:
        return sorted(r for m, r in self.logits if m == model)

    def pooled(self, model: str) -> np.ndarray:
        """(N, R x M, C): every network of ``model``, replicate after replicate."""
        return np.concatenate([self.logits[(model, r)] for r in self.replicates(model)], 1)

    @property
    def majority(self) -> float:
        """The share of the most frequent test class."""
        return float(np.bincount(self.labels, minlength=len(self.classes)).max()
                     / len(self.labels))


@dataclass
class Results:
    """Both regimes, the pre-trained starts on their own test faces (arch -> (logits,
    labels)) and the plan whose jobs made them."""

    default: Regime
    mechanism: Regime
    pretrained: dict[str, tuple[np.ndarray, np.ndarray]]
    plan: Plan
    store: Store

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    def network(self, model: str, replicate: int, k: int) -> nn.Module:
        """Network ``k`` (0-based) of ``model`` in ``replicate`` of the default regime."""
        return load_network(self.plan.networks[(DEFAULT, model, replicate)][k], self.store)

    def seconds(self) -> float:
        """Training seconds of every stored job of the run (as it was trained, whenever)."""
        return float(sum(self.store.get(j).record["seconds"] for j in self.plan.jobs()))


def _regime(plan: Plan, store: Store, regime: str) -> Regime:
    logits, histories, rows, labels, test, counts = {}, {}, [], None, None, None
    for (g, model, r), jobs in plan.networks.items():
        if g != regime:
            continue
        parts, frames = [], []
        for k, job in enumerate(jobs, start=1):
            entry = store.get(job)
            arrays = entry.arrays("test")
            parts.append(arrays["logits"])
            labels = arrays["labels"]
            frames.append(entry.frame("history"))
            summary = entry.record["summary"]
            rows.append({"model": model, "replicate": r, "network": k, **summary})
        logits[(model, r)] = np.concatenate(parts, axis=1)
        histories[(model, r)] = frames
        train, test = jobs[0].spec["faces"].load()
        counts = train.class_counts() if counts is None else counts
    return Regime(regime, test.classes, labels, logits, histories, pd.DataFrame(rows), test,
                  counts)


def load(plan: Plan, store: Store) -> Results:
    """The results of a plan whose jobs are stored (:func:`run` trains what is missing)."""
    pretrained = {}
    for arch, job in plan.pretrain.items():
        arrays = store.get(job).arrays("test")
        pretrained[arch] = (arrays["logits"], arrays["labels"])
    return Results(_regime(plan, store, DEFAULT), _regime(plan, store, MECHANISM), pretrained,
                   plan, store)


def run(settings: Settings, store: Store | None = None) -> Results:
    """Train (or reuse from the store) every network of the chapter and read them back; one
    line says what was reused and what was trained."""
    store = store or Store()
    chapter = plan(settings)
    store.run(chapter.jobs())
    return load(chapter, store)
