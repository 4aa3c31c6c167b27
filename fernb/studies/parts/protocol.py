"""The plan of chapter 3's two experiments, as stored jobs (:mod:`fernb.store`).

Every network is trained by its own jobs, keyed by what it depends on:

- ``parts.landmarks``: stage 1 of one FTL or EL network (its landmark set, its part, its
  initial weights, the stage-1 settings), shared by everything fine-tuned from it;
- ``parts.rate``: the fine-tuning rate, chosen from how far fine-tuning moves the first FTL
  network of the first lab trial at each rate of ``finetune_lrs``
  (:func:`fernb.transfer.finetune_travel`, :func:`fernb.transfer.choose_rate`); one rate for
  the whole chapter, as the paper fine-tunes every network at one rate;
- ``parts.expressions``: stages 2 and 3 of a network on an expression set, from its stage-1
  weights, or from its random initial weights for the control;
- ``parts.direct``: a Baseline network trained directly on expressions.

The *default* regime is the paper's setting scaled down: on the lab set, for each trial, the
Baseline and FTL ensembles (``n_networks`` each) and EL (one network per part), pre-trained on
the trial's own training faces; the same on the wild set, whose networks are also tested on
the lab set (Table III). The *mechanism* regime gives transfer the conditions the paper's
argument needs: a landmark pool of other synth-lab subjects (every frame, landmarks only)
pre-trains the FTL and EL networks; then, for each number of expression-labelled subjects
of ``curve`` (drawn nested, per seed of ``curve_seeds``, from the subjects outside the test
and validation folds), the Baseline, the pre-trained FTL and EL networks and a control (the
FTL network's schedule from its random initial weights) learn the expressions and are tested
on the held-out subjects. EL joins the curve only when every kind has as many networks as EL
has parts (:func:`curve_kinds`).

Member ``k`` of every kind within one trial (or one curve seed) starts from the same
extractor draw (:func:`fernb.seeding.seeded`), so kinds differ in training, not in their
initial luck.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from fernb.data import synthetic
from fernb.data.datasets import SYNTHETIC, DataSpec, FaceDataset
from fernb.data.splits import esr_subject_folds, esr_trials, standard_split
from fernb.data.transforms import detect_landmarks, to_gray
from fernb.device import computed_precision
from fernb.evaluate import predict
from fernb.models.parts import ENSEMBLE_PARTS, PartNetwork, Standardize
from fernb.seeding import derive_seed, seeded
from fernb.store import Entry, Job, Store
from fernb.studies.parts.settings import Settings, pool_val_subjects
from fernb.transfer import (Runtime, TransferConfig, choose_rate, equalized, finetune,
                            finetune_travel, image_errors, inputs, paper_augmentation,
                            pretrain_landmarks, relative_change, train_direct, train_head)

KINDS = ("baseline", "ftl", "el")
CURVE_KINDS = ("baseline", "control", "ftl", "el")
KIND_NAMES = {"baseline": "Baseline", "ftl": "FTL", "el": "EL", "control": "control"}


def curve_kinds(settings: Settings) -> tuple[str, ...]:
    """The kinds the learning curve trains: EL only with ``curve_networks`` equal to its five
    part networks, since five networks against one is no comparison of kinds."""
    if settings.curve_networks == len(ENSEMBLE_PARTS):
        return CURVE_KINDS
    return tuple(k for k in CURVE_KINDS if k != "el")


def subjects(n: int) -> str:
    """``"1 subject"``, ``"2 subjects"``."""
    return f"{n} subject{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class Faces:
    """A chapter dataset as the paper feeds it (Sec. III-A/B): grayscale, CLAHE when
    ``clahe`` (on the face crops; the paper equalises before face detection), and 68
    landmarks (a real set without them gets MediaPipe's, which needs the optional
    ``fernb[landmarks]`` extra; the paper used dlib's ERT model)."""

    data: DataSpec
    clahe: bool = True

    def load(self) -> FaceDataset:
        return _faces(self)


@functools.lru_cache(maxsize=8)
def _faces(spec: Faces) -> FaceDataset:
    data = spec.data.load()
    if data.images.ndim == 4:
        data = data.with_options(images=np.stack([to_gray(image) for image in data.images]))
    if data.landmarks is None:
        data = data.with_options(landmarks=detect_landmarks(data.images))
    return equalized(data) if spec.clahe else data


@dataclass(frozen=True, eq=False)
class Subset:
    """Some faces of a :class:`Faces` set, by position."""

    faces: Faces
    index: np.ndarray

    def load(self) -> FaceDataset:
        return self.faces.load().subset(self.index)

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class Net:
    """One network's architecture and initial weights: built under ``seeded(seed,
    member)``, so member ``k`` of every kind with one ``seed`` starts from the same
    extractor draw (:class:`fernb.models.parts.PartNetwork` draws it first)."""

    part: str | None
    n_classes: int
    width: float
    seed: int
    member: int

    @property
    def train_seed(self) -> int:
        """The seed of its training's shuffling and augmentation."""
        return derive_seed(self.seed, "train", self.member) % 2**31

    def build(self, standardize: bool = True) -> PartNetwork:
        """The network; ``standardize`` adds the fixed feature standardisation of stage 2
        (no parameters: it draws nothing, so the initial weights do not depend on it)."""
        with seeded(self.seed, self.member):
            return PartNetwork(part=self.part, n_classes=self.n_classes, width=self.width,
                               standardize=standardize)


# --------------------------------------------------------------------- stage settings

STAGE1 = ("landmark_lr", "landmark_epochs", "batch_size", "patience", "betas", "eps",
          "epoch_images")
EXPRESSIONS = ("head_lr", "head_epochs", "head_patience", "head_augment", "head_copies",
               "finetune_epochs", "finetune_statistics", "batch_size", "patience", "stop_on",
               "betas", "eps", "epoch_images")
DIRECT = ("direct_lr", "direct_epochs", "batch_size", "patience", "stop_on", "betas", "eps",
          "epoch_images")


def stage_settings(config: TransferConfig, names: Sequence[str]) -> dict[str, Any]:
    """The fields of ``config`` a stage depends on (a job's key holds only those)."""
    return {name: getattr(config, name) for name in names}


def transfer_config(settings: Settings, protocol: str) -> TransferConfig:
    """The :class:`~fernb.transfer.TransferConfig` of the ``"lab"`` runs (and the mechanism
    regime's), or of the ``"wild"`` ones; ``finetune_lr`` is chosen by the ``parts.rate``
    job."""
    wild = protocol == "wild"
    return TransferConfig(
        landmark_lr=settings.landmark_lr, head_lr=settings.head_lr,
        direct_lr=settings.direct_lr, head_epochs=settings.head_epochs,
        landmark_epochs=settings.wild_landmark_epochs if wild else settings.landmark_epochs,
        finetune_epochs=settings.wild_finetune_epochs if wild else settings.finetune_epochs,
        direct_epochs=settings.wild_direct_epochs if wild else settings.direct_epochs,
        batch_size=settings.batch_size, patience=settings.patience,
        stop_on=settings.stop_on, head_patience=settings.head_patience,
        head_augment=settings.head_augment,
        head_copies=settings.head_copies,
        epoch_images=settings.epoch_images)


def _config(values: Mapping[str, Any], **changes: Any) -> TransferConfig:
    known = {f.name for f in fields(TransferConfig)}
    return TransferConfig(**{k: v for k, v in values.items() if k in known}, **changes)


def _runtime(job: Job) -> Runtime:
    """Where a job computes (its ``runtime``, not part of its key) and in which precision (in
    its spec: a stored result depends on it)."""
    return Runtime(device=job.runtime.get("device", "auto"), precision=job.spec["precision"])


def _augment(spec: Mapping[str, Any]) -> Any:
    if spec["augment"] == "none":
        return None
    return functools.partial(paper_augmentation, spec["image_size"])


# ------------------------------------------------------------------------------- jobs

def run_landmarks(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Stage 1 of one network on its landmark set: the weights after stage 1, the history,
    and how far stage 1 moved the extractor."""
    spec = job.spec
    network = spec["net"].build()
    start = copy.deepcopy(network.state_dict())
    history = pretrain_landmarks(network, spec["landmarks"].load(), spec["val"].load(),
                                 config=_config(spec["config"]), checkpoint=entry.checkpoint,
                                 augment=_augment(spec), seed=spec["seed"],
                                 runtime=_runtime(job))
    entry.save_state("stage1", network.state_dict())
    entry.save_frame("history", history.to_frame().reset_index())
    return {"epochs": len(history), "best_epoch": history.best_epoch,
            "travel": relative_change(start, network)}


def _load_stage1(network: PartNetwork, stage1: Entry) -> None:
    """Stage 1's weights into ``network``; a network without the feature standardisation
    leaves out stage 1's (still the identity: only stage 2 sets it)."""
    weights = stage1.state("stage1")
    if not isinstance(network.standardize, Standardize):
        weights = {k: v for k, v in weights.items() if not k.startswith("standardize.")}
    network.load_state_dict(weights)


def run_rate(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """The fine-tuning rate: with one rate in ``lrs``, that rate; else the rate at which
    fine-tuning moves the stage-1 network ``share`` as far as stage 1 moved it."""
    spec = job.spec
    stage1 = store.get(job.needs[0])
    stage1_travel = float(stage1.record["summary"]["travel"])
    target = spec["share"] * stage1_travel
    lrs = spec["lrs"]
    if len(lrs) == 1:
        entry.save_frame("travel", pd.DataFrame({"lr": [float(lrs[0])], "travel": [np.nan]}))
        return {"rate": float(lrs[0]), "target": target, "stage1_travel": stage1_travel}
    network = spec["net"].build(standardize=spec["standardize"])
    _load_stage1(network, stage1)
    travel = finetune_travel(network, spec["train"].load(), lrs, val=spec["val"].load(),
                             config=_config(spec["config"]), augment=_augment(spec),
                             seed=spec["seed"], runtime=_runtime(job))
    entry.save_frame("travel", travel.reset_index())
    return {"rate": choose_rate(travel, target), "target": target,
            "stage1_travel": stage1_travel}


def _logits(network: PartNetwork, subset: Subset | None, job: Job) -> np.ndarray | None:
    if subset is None:
        return None
    runtime = _runtime(job)
    return predict(network, inputs(subset.load()), device=runtime.device,
                   precision=runtime.precision).numpy()  # (N, 1, C)


def _save_outputs(entry: Entry, network: PartNetwork, job: Job) -> None:
    spec = job.spec
    entry.save_arrays("test", logits=_logits(network, spec["test"], job))
    if spec.get("cross") is not None:
        entry.save_arrays("cross", logits=_logits(network, spec["cross"], job))
    entry.save_state("final", network.state_dict())


def run_expressions(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """Stages 2 and 3 of one network from its stage-1 weights (or, for the control, from its
    random initial weights): the test logits after each stage, the final weights, the
    histories, how far fine-tuning moved the extractor and, for a transfer network, each
    validation image's landmark error before and after fine-tuning (Sec. V-B)."""
    spec = job.spec
    *stage1, rate_job = job.needs
    network = spec["net"].build(standardize=spec["standardize"])
    if stage1:
        _load_stage1(network, store.get(stage1[0]))
    rate = float(store.get(rate_job).record["summary"]["rate"])
    config = _config(spec["config"], finetune_lr=rate)
    train, val = spec["train"].load(), spec["val"].load()
    common = dict(config=config, augment=_augment(spec), seed=spec["seed"],
                  runtime=_runtime(job))
    head = train_head(network, train, val, checkpoint=entry.checkpoint / "head", **common)
    entry.save_arrays("head", logits=_logits(network, spec["test"], job))
    stage2 = copy.deepcopy(network)
    errors = {}
    if stage1:
        errors = {f"before_{p}": e for p, e in image_errors(stage2, val).items()}
    tuned = finetune(network, train, val, checkpoint=entry.checkpoint / "finetune", **common)
    _save_outputs(entry, network, job)
    if stage1:
        errors |= {f"after_{p}": e for p, e in image_errors(network, val).items()}
        entry.save_arrays("errors", **errors)
    entry.save_frame("head_history", head.to_frame().reset_index())
    entry.save_frame("history", tuned.to_frame().reset_index())
    return {"rate": rate, "head_epochs": len(head), "epochs": len(tuned),
            "best_epoch": tuned.best_epoch, "travel": relative_change(stage2, network)}


def run_direct(job: Job, entry: Entry, store: Store) -> dict[str, Any]:
    """A Baseline network trained directly on expressions: test logits, weights, history,
    and how far training moved the extractor from its initial draw."""
    spec = job.spec
    network = spec["net"].build()
    start = copy.deepcopy(network.state_dict())
    history = train_direct(network, spec["train"].load(), spec["val"].load(),
                           config=_config(spec["config"]), augment=_augment(spec),
                           seed=spec["seed"], runtime=_runtime(job))
    _save_outputs(entry, network, job)
    entry.save_frame("history", history.to_frame().reset_index())
    return {"epochs": len(history), "best_epoch": history.best_epoch,
            "travel": relative_change(start, network)}


# ------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Network:
    """One trained network of the study: its regime (``"default"``, ``"mechanism"``),
    where it was trained (``"lab-t0"``, ``"wild"``; the number of labelled subjects in the
    mechanism regime), the curve seed (0 in the default regime), its kind (Baseline, FTL,
    EL, control), its member index, its part, and its jobs."""

    regime: str
    where: str
    seed: int
    kind: str
    member: int
    part: str | None
    job: Job
    stage1: Job | None = None

    @property
    def name(self) -> str:
        return self.part if self.kind == "el" else f"{KIND_NAMES[self.kind]} {self.member + 1}"


@dataclass
class Plan:
    """Every job of a study, the networks they train and the data they read."""

    settings: Settings
    lab: Faces
    wild: Faces
    pool: Faces
    mechanism: Faces
    lab_splits: dict[int, Any]
    wild_split: Any
    mechanism_split: dict[str, Subset]
    labelled: dict[tuple[int, int], np.ndarray]
    rate: Job
    networks: list[Network] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        """Every job, the rate first (needs come before the jobs that read them)."""
        return [self.rate, *(n.job for n in self.networks)]


def lab_trials(data: FaceDataset, n_folds: int) -> list[Any]:
    """The lab protocol's trials: subject i (in id order) in fold ``i % n_folds``; trial t
    tests fold t, validates on fold t + 1 and trains on the others."""
    return esr_trials(esr_subject_folds(data.subjects, n_folds), n_folds - 2)


def faces_of(settings: Settings) -> dict[str, Faces]:
    """The four face sets: the lab and wild sets of the default regime, the mechanism
    regime's synth-lab set (the lab set itself when that is synth-lab) and its landmark
    pool (other subjects: another generator seed; every frame)."""
    size, seed, clahe = settings.image_size, settings.seed, settings.clahe

    def knobs(name: str) -> dict[str, float]:
        """The generator's ``motion`` where it is not the preset's own (the run store keys a
        set by the knobs it names)."""
        if name not in SYNTHETIC or settings.motion == synthetic.KNOBS[name]["motion"]:
            return {}
        return {"motion": settings.motion}

    return {
        "lab": Faces(DataSpec.of(settings.dataset, settings.data_root, size=size,
                                 n_subjects=settings.n_subjects, seed=seed,
                                 **knobs(settings.dataset)), clahe),
        "wild": Faces(DataSpec.of(settings.wild_dataset, settings.wild_root, size=size,
                                  n_subjects=settings.wild_subjects, seed=seed,
                                  **knobs(settings.wild_dataset)), clahe),
        "mechanism": Faces(DataSpec.of("synth-lab", size=size, n_subjects=settings.n_subjects,
                                       seed=seed, **knobs("synth-lab")), clahe),
        "pool": Faces(DataSpec.of("synth-lab", size=size, n_subjects=settings.pool_subjects,
                                  seed=derive_seed(seed, "landmark pool") % 2**31,
                                  frames="all", **knobs("synth-lab")), clahe),
    }


def plan(settings: Settings) -> Plan:
    """Every job of the chapter (see the module notes)."""
    sets = faces_of(settings)
    lab, wild, mech, pool = (sets[k].load() for k in ("lab", "wild", "mechanism", "pool"))
    if lab.image_size != wild.image_size:
        raise ValueError(f"the lab and wild images must have one size (Table III tests the "
                         f"wild-trained networks on the lab set); got {lab.image_size} and "
                         f"{wild.image_size}")
    if tuple(lab.classes[:wild.n_classes]) != tuple(wild.classes):
        raise ValueError(f"the wild classes {wild.classes} must be the first classes of the "
                         f"lab set {lab.classes} (fernb's canonical order)")
    base = {"image_size": settings.image_size, "augment": settings.augment,
            "precision": computed_precision(settings.precision, settings.device)}
    lab_splits = dict(enumerate(lab_trials(lab, settings.n_folds)))
    wild_split = standard_split(wild.labels, wild.subjects, wild.split, seed=settings.seed)
    cross = Subset(sets["lab"], np.flatnonzero(lab.labels < wild.n_classes))

    def subset(name: str, index: np.ndarray) -> Subset:
        return Subset(sets[name], np.asarray(index))

    networks: list[Network] = []
    first = settings.trials[0]
    first_split = lab_splits[first]
    calibrated = _landmarks_job(settings, base, subset("lab", first_split.train),
                                subset("lab", first_split.val),
                                Net("full", lab.n_classes, settings.width,
                                    derive_seed(settings.seed, "lab", first), 0),
                                transfer_config(settings, "lab"), settings.landmark_epochs,
                                label=f"lab-t{first} FTL 1, stage 1")
    rate = Job("parts.rate", {
        **base, "train": subset("lab", first_split.train),
        "val": subset("lab", first_split.val), "net": calibrated.spec["net"],
        "lrs": tuple(settings.finetune_lrs), "share": settings.finetune_share,
        "standardize": settings.standardize,
        "config": stage_settings(transfer_config(settings, "lab"), EXPRESSIONS),
        "seed": calibrated.spec["net"].train_seed}, run_rate, needs=(calibrated,),
        label="fine-tuning rate", runtime={"device": settings.device})

    def default(where: str, name: str, split: Any, protocol: str, init: int,
                cross_set: Subset | None) -> None:
        data = {"train": subset(name, split.train), "val": subset(name, split.val),
                "test": subset(name, split.test), "cross": cross_set}
        n_classes = sets[name].load().n_classes
        config = transfer_config(settings, protocol)
        members = [("baseline", k, None) for k in range(settings.n_networks)]
        members += [("ftl", k, "full") for k in range(settings.n_networks)]
        members += [("el", k, part) for k, part in enumerate(ENSEMBLE_PARTS)]
        for kind, k, part in members:
            net = Net(part, n_classes, settings.width, init, k)
            label = f"{where} {KIND_NAMES[kind]} {part if kind == 'el' else k + 1}"
            networks.append(_network(settings, base, "default", where, 0, kind, k, part,
                                     net, data, data["train"], data["val"], config, rate,
                                     settings.landmark_epochs if protocol == "lab"
                                     else settings.wild_landmark_epochs, label))

    for t in settings.trials:
        default(f"lab-t{t}", "lab", lab_splits[t], "lab", derive_seed(settings.seed, "lab", t),
                None)
    default("wild", "wild", wild_split, "wild", derive_seed(settings.seed, "wild"), cross)

    # The mechanism regime: test fold 0, validation fold 1, labelled subjects drawn from the
    # rest; the pool's last subjects validate stage 1.
    folds = esr_subject_folds(mech.subjects, settings.n_folds)
    mechanism_split = {"val": subset("mechanism", np.flatnonzero(folds == 1)),
                       "test": subset("mechanism", np.flatnonzero(folds == 0))}
    candidates = np.unique(mech.subjects[folds >= 2])
    pool_ids = np.unique(pool.subjects)
    held = pool_ids[-pool_val_subjects(len(pool_ids)):]
    pool_train = subset("pool", np.flatnonzero(~np.isin(pool.subjects, held)))
    pool_val = subset("pool", np.flatnonzero(np.isin(pool.subjects, held)))
    config = transfer_config(settings, "lab")
    labelled = {}
    for r in settings.curve_seeds:
        init = derive_seed(settings.seed, "mechanism", r)
        order = np.random.default_rng(derive_seed(settings.seed, "curve", r)).permutation(
            candidates)
        for n in sorted(settings.curve):
            labelled[(r, n)] = np.sort(order[:n])
            train = subset("mechanism", np.flatnonzero(np.isin(mech.subjects, order[:n])))
            data = {"train": train, **mechanism_split, "cross": None}
            members = [(kind, k, None if kind == "baseline" else "full")
                       for kind in ("baseline", "control", "ftl")
                       for k in range(settings.curve_networks)]
            if "el" in curve_kinds(settings):
                members += [("el", k, part) for k, part in enumerate(ENSEMBLE_PARTS)]
            for kind, k, part in members:
                net = Net(part, mech.n_classes, settings.width, init, k)
                label = (f"{subjects(n)}, seed {r}: {KIND_NAMES[kind]} "
                         f"{part if kind == 'el' else k + 1}")
                networks.append(_network(settings, base, "mechanism", str(n), r, kind, k,
                                         part, net, data, pool_train, pool_val, config, rate,
                                         settings.pool_epochs, label))
    return Plan(settings, sets["lab"], sets["wild"], sets["pool"], sets["mechanism"],
                lab_splits, wild_split, mechanism_split, labelled, rate, networks)


def _landmarks_job(settings: Settings, base: Mapping[str, Any], landmarks: Subset,
                   val: Subset, net: Net, config: TransferConfig, epochs: int,
                   label: str) -> Job:
    stage1 = stage_settings(config, STAGE1) | {"landmark_epochs": epochs}
    return Job("parts.landmarks", {**base, "landmarks": landmarks, "val": val, "net": net,
                                   "config": stage1, "seed": net.train_seed},
               run_landmarks, label=label, runtime={"device": settings.device})


def _network(settings: Settings, base: Mapping[str, Any], regime: str, where: str, seed: int,
             kind: str, k: int, part: str | None, net: Net, data: Mapping[str, Any],
             landmarks: Subset, landmarks_val: Subset, config: TransferConfig, rate: Job,
             landmark_epochs: int, label: str) -> Network:
    """The jobs of one network: direct training for the Baseline; stage 1 on the landmark
    set and stages 2-3 for FTL and EL; stages 2-3 alone for the control."""
    train_seed = net.train_seed
    if kind == "baseline":
        job = Job("parts.direct", {**base, **data, "net": net, "seed": train_seed,
                                   "config": stage_settings(config, DIRECT)},
                  run_direct, label=label, runtime={"device": settings.device})
        return Network(regime, where, seed, kind, k, part, job)
    stage1 = None
    if kind != "control":
        stage1 = _landmarks_job(settings, base, landmarks, landmarks_val, net, config,
                                landmark_epochs, f"{label}, stage 1")
    needs = (stage1, rate) if stage1 is not None else (rate,)
    job = Job("parts.expressions", {**base, **data, "net": net, "seed": train_seed,
                                    "config": stage_settings(config, EXPRESSIONS),
                                    "standardize": settings.standardize},
              run_expressions, needs=needs, label=label,
              runtime={"device": settings.device})
    return Network(regime, where, seed, kind, k, part, job, stage1)
