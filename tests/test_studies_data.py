"""The data chapter's tables and pictures of the generator's mechanism knobs
(fernb.studies.data)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fernb.data import synthetic  # noqa: E402
from fernb.labels import EMOTIONS_7  # noqa: E402
from fernb.studies import data as study  # noqa: E402


def test_knob_table_marks_knobs_off_and_of_the_other_preset() -> None:
    table = study.knob_table()
    assert list(table.index) == list(synthetic.PRESETS)
    assert set(table.columns) == set(synthetic.KNOBS["synth-lab"]) | set(
        synthetic.KNOBS["synth-wild"])
    assert (table["distractor"] == "off").all()
    assert table.loc["synth-wild", "frames"] == "-" and table.loc["synth-lab", "per_subject"] == "-"
    assert not table.isin(["None", "nan"]).any().any()


def test_blend_pairs_table_lists_every_pair_with_its_shared_units() -> None:
    table = study.blend_pairs_table()
    assert len(table) == len(synthetic.BLEND_PAIRS)
    assert table.loc["fear - surprise", "shared action units"] == "AU1 + AU2 + AU5 + AU25 + AU26"
    assert table.loc["neutral - sadness", "shared action units"].startswith("none")


def test_annotation_counts_relabel_only_towards_blend_partners() -> None:
    counts = study.annotation_counts(n_subjects=6, seed=0)
    assert set(counts) == {"label_noise", "label_from_mixture"}
    partners = synthetic.blend_partners(EMOTIONS_7, "facs")
    mixture = counts["label_from_mixture"]
    for clean in mixture.index:
        for annotated in mixture.columns:
            if clean != annotated and mixture.loc[clean, annotated]:
                assert annotated in partners[clean], (clean, annotated)
    share = study.relabelled_share(counts)
    assert all(0 < v < 0.3 for v in share.values())
    for table in counts.values():
        assert table.to_numpy().sum() == 6 * synthetic.KNOBS["synth-wild"]["per_subject"]


@pytest.mark.parametrize("make, n_images", [
    (lambda: study.cue_figure(48, 0), 4 * 7),
    (lambda: study.blend_figure(48, 0), 2 * 7),
    (lambda: study.motion_figure(48, 0), 4 * 8),
    (lambda: study.annotation_figure(study.annotation_counts(2, 0)), 0),
])
def test_knob_figures(make, n_images: int) -> None:
    fig = make()
    assert sum(bool(ax.images) for ax in fig.axes) == n_images
    plt.close(fig)


def test_the_calibration_baselines_are_stored_runs(tmp_path) -> None:
    from fernb.store import Store
    settings = study.Settings.from_values({"n_subjects_lab": 6, "n_subjects_wild": 6,
                                           "epochs": 1, "wild_epochs": 1, "width": 0.25,
                                           "wild_width": 0.125, "n_folds": 4})
    store = Store(tmp_path)
    first = study.calibrate(settings, store)
    assert set(first) == {"synth-lab", "synth-wild"}
    lab = first["synth-lab"]
    assert lab.logits.shape == (len(lab.labels), 1, 8) and len(lab.history) == 1
    table = study.calibration_table(first)
    assert table["epochs trained"].tolist() == [1, 1]
    assert set(study.highlights(first)) == {f"{p}_{k}" for p in ("synth_lab", "synth_wild")
                                            for k in ("accuracy", "confusions", "weakest")}
    assert lab.learning("synth-lab").model == "synth-lab"
    again = study.calibrate(settings, store)  # stored: nothing is trained again
    np.testing.assert_array_equal(again["synth-wild"].logits, first["synth-wild"].logits)
    assert len(store.entries()) == 2
    more = settings.from_values({**settings.as_dict(), "wild_epochs": 2})
    study.calibrate(more, store)  # only the synth-wild baseline depends on wild_epochs
    assert len(store.entries()) == 3
