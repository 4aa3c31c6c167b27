"""Real-dataset readers and the layout check, on tiny fixtures in each official layout."""
from __future__ import annotations

import numpy as np
import pytest

from fernb.data.check import PUBLISHED_SIZES, check_dataset, ferplus_votes
from fernb.data.datasets import _REGISTRY
from fernb.data.real import READERS, cache_path, ckplus, load_npz, save_npz
from fernb.data.transforms import box_from_landmarks, crop_matrix
from fernb.labels import EMOTIONS_7, EMOTIONS_8, FERPLUS_COLUMNS

from fixtures import (FERPLUS_VOTES, affectnet_row, ckplus_landmarks, rafdb_landmarks5,
                      write_affectnet, write_ckplus, write_fer2013, write_ferplus, write_jaffe,
                      write_rafdb, write_sfew)

WRITERS = {"ckplus": write_ckplus, "jaffe": write_jaffe, "sfew": write_sfew,
           "fer2013": write_fer2013, "ferplus": write_ferplus, "rafdb": write_rafdb,
           "affectnet": write_affectnet}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_reader_is_registered_and_reads_its_fixture(tmp_path, name):
    root = WRITERS[name](tmp_path / name)
    report = check_dataset(name, root)
    assert report.ok, report.format()
    ds = _REGISTRY[name](root=root, size=24)
    assert READERS[name] is _REGISTRY[name]
    assert ds.images.shape[1:3] == (24, 24) and ds.images.dtype == np.uint8
    assert ds.name == name and len(ds) == sum(v["count"] for v in report.summary.values())
    assert ds[0][0].shape[-2:] == (24, 24)


def test_ckplus_first_frame_neutral_last_three_emotion(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=3, n_sequences=2, n_frames=5)
    ds = ckplus(root, size=32, crop="landmarks")
    assert len(ds) == 3 * 2 * 4 and ds.classes == EMOTIONS_8
    assert sorted(np.unique(ds.subjects)) == [5, 10, 15]
    first = ds.meta["sequence"] == "S005_001"
    assert list(ds.meta["frame"][first]) == [1, 3, 4, 5]
    # CK+ code 1 is anger, code 2 contempt: S005/001 -> anger, S005/002 -> contempt.
    assert [ds.classes[i] for i in ds.labels[first]] == ["neutral"] + ["anger"] * 3
    second = ds.meta["sequence"] == "S005_002"
    assert {ds.classes[i] for i in ds.labels[second][1:]} == {"contempt"}
    assert "S005_003" not in set(ds.meta["sequence"])          # no emotion file: left out
    assert set(ds.meta["crop"]) == {"landmarks"}


def test_ckplus_landmarks_follow_the_crop(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1)
    ds = ckplus(root, size=40, crop="landmarks")
    raw = ckplus_landmarks() + 1                                 # frame 1 of the fixture
    expected = raw @ crop_matrix(box_from_landmarks(raw, 0.1), 40)[:, :2].T \
        + crop_matrix(box_from_landmarks(raw, 0.1), 40)[:, 2]
    np.testing.assert_allclose(ds.landmarks[0], expected, atol=1e-4)
    assert ds.landmarks.min() >= 0 and ds.landmarks.max() <= 40


def test_ckplus_seven_classes_drops_contempt(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=2)
    ds = ckplus(root, size=24, n_classes=7, crop="none")
    assert ds.classes == EMOTIONS_7 and len(ds) == 4 + 1        # contempt frames gone


def test_jaffe_subjects_and_expressions_from_file_names(tmp_path):
    root = write_jaffe(tmp_path / "jaffe", n_subjects=2)
    ds = READERS["jaffe"](root, size=24, crop="none")
    assert len(ds) == 14 and ds.classes == EMOTIONS_7
    assert list(np.unique(ds.meta["subject_code"])) == ["KA", "KL"]
    assert np.array_equal(ds.subjects, (ds.meta["subject_code"] == "KL").astype(int))
    assert np.array_equal(np.bincount(ds.labels), [2] * 7)


def test_sfew_split_from_folder(tmp_path):
    ds = READERS["sfew"](write_sfew(tmp_path / "sfew", n_train=2, n_val=1), size=24, crop="none")
    assert ds.images.shape == (21, 24, 24, 3) and ds.channels == 3
    assert (ds.split == "train").sum() == 14 and (ds.split == "val").sum() == 7
    angry = np.char.startswith(ds.meta["file"], "Angry")
    assert set(ds.labels[angry]) == {EMOTIONS_7.index("anger")}


def test_fer2013_codes_and_usage(tmp_path):
    ds = READERS["fer2013"](write_fer2013(tmp_path / "fer", n_per_split=7), size=48)
    # FER-2013 codes 0..6 = anger, disgust, fear, happiness, sadness, surprise, neutral.
    names = [ds.classes[i] for i in ds.labels[:7]]
    assert names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert list(np.unique(ds.split, return_counts=True)[1]) == [7, 7, 7]


def test_ferplus_votes_majority_rule():
    votes = np.array([v for v, _ in FERPLUS_VOTES])
    label, mixture = ferplus_votes(votes)
    expected = [FERPLUS_COLUMNS.index(e) if e else -1 for _, e in FERPLUS_VOTES]
    assert list(label) == expected
    np.testing.assert_allclose(mixture[7], np.array([1, 1, 1, 1, 4, 1, 1, 0]) / 10)


def test_ferplus_labels_mixtures_and_dropped_rows(tmp_path):
    ds = READERS["ferplus"](write_ferplus(tmp_path / "ferplus"), size=48)
    kept = [e for _, e in FERPLUS_VOTES if e]
    assert len(ds) == 3 * len(kept) and ds.classes == EMOTIONS_8
    assert [ds.classes[i] for i in ds.labels[:len(kept)]] == kept
    np.testing.assert_allclose(ds.mixtures.sum(1), 1, atol=1e-6)
    anger = ds.mixtures[kept.index("anger")]                      # votes 1,1,1,1,4,1,1,0
    assert anger[EMOTIONS_8.index("anger")] == pytest.approx(0.4)
    assert anger[EMOTIONS_8.index("sadness")] == pytest.approx(0.1)
    assert "" not in set(ds.meta["image_name"])
    seven = READERS["ferplus"](tmp_path / "ferplus", size=48, n_classes=7)
    assert len(seven) == 3 * (len(kept) - 1) and seven.mixtures.shape[1] == 7
    surprise = seven.mixtures[kept.index("surprise")]             # 1 neutral, 6 surprise, 3 contempt
    np.testing.assert_allclose(surprise[[0, 3]], [1 / 7, 6 / 7], atol=1e-6)


def test_rafdb_codes_splits_and_landmarks5(tmp_path):
    ds = READERS["rafdb"](write_rafdb(tmp_path / "raf", n_train=7, n_test=7), size=32)
    # RAF-DB codes 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral.
    assert [ds.classes[i] for i in ds.labels[:7]] == [
        "surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    assert list(ds.split[[0, 7]]) == ["train", "test"]
    np.testing.assert_allclose(ds.meta["landmarks5"][8], rafdb_landmarks5(8))


def test_affectnet_drops_codes_8_to_10_and_carries_landmarks(tmp_path):
    root = write_affectnet(tmp_path / "an", n_train=2, n_val=1)
    ds = READERS["affectnet"](root, size=40)
    assert len(ds) == 8 * 3 and (ds.split == "val").sum() == 8   # headerless validation.csv
    assert np.all(np.abs(ds.valence_arousal) <= 1)
    _, box, points, valence, arousal = affectnet_row(1, 0)
    np.testing.assert_allclose(ds.valence_arousal[1], [valence, arousal], atol=1e-6)
    np.testing.assert_allclose(ds.landmarks[1], points @ crop_matrix(box, 40)[:, :2].T
                               + crop_matrix(box, 40)[:, 2], atol=0.01)  # CSV has 2 decimals
    seven = READERS["affectnet"](root, size=24, n_classes=7)
    assert len(seven) == 7 * 3 and seven.classes == EMOTIONS_7
    capped = READERS["affectnet"](root, size=24, max_per_class=1)
    assert len(capped) == 16


def test_published_sizes_match_the_papers():
    assert sum(PUBLISHED_SIZES["ckplus"]["all"].values()) == 1308          # ESR, Ferreira
    assert sum(PUBLISHED_SIZES["jaffe"]["all"].values()) == 213            # Ferreira, Wadhawan
    assert sum(PUBLISHED_SIZES["fer2013"]["train"].values()) == 28709      # Gan Sec. 4.1
    assert sum(PUBLISHED_SIZES["rafdb"]["train"].values()) == 12271        # Zhou, Gan
    assert sum(PUBLISHED_SIZES["rafdb"]["test"].values()) == 3068
    an = PUBLISHED_SIZES["affectnet"]
    assert sum(v for k, v in an["train"].items() if k != "contempt") == 283901  # Zhou: AN-7
    assert sum(an["val"].values()) == 4000


def test_missing_root_and_folders_fail_fast_with_what_to_fix(tmp_path):
    report = check_dataset("ckplus", tmp_path / "nowhere")
    assert not report.ok and "is not a folder" in report.problems[0]
    (tmp_path / "ck" / "cohn-kanade-images").mkdir(parents=True)
    report = check_dataset("ckplus", tmp_path / "ck")
    assert "Emotion" in report.problems[0] and "Landmarks" in report.problems[0]
    with pytest.raises(ValueError, match="fernb data check ckplus"):
        ckplus(tmp_path / "ck")
    with pytest.raises(ValueError, match="data_root"):
        ckplus(None)
    with pytest.raises(ValueError, match="unknown dataset layout"):
        check_dataset("ck+", tmp_path)


@pytest.mark.parametrize("name, needs", [("ckplus", "cohn-kanade-images/, Emotion/ and "
                                                     "Landmarks/"),
                                         ("folder", "labels.csv")])
def test_a_missing_root_says_which_folders_the_layout_needs(tmp_path, name, needs, capsys):
    from fernb import cli
    assert cli.main(["data", "check", name, "--root", str(tmp_path / "MISSING")]) == 1
    out = capsys.readouterr().out
    assert "MISSING is not a folder" in out and needs in out


def test_unreadable_images_are_listed(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1)
    bad = root / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000005.png"
    bad.write_bytes(b"not an image")
    report = check_dataset("ckplus", root)
    assert not report.ok
    assert any("1 image(s) do not decode completely" in p and bad.name in p
               for p in report.problems)
    with pytest.raises(ValueError, match="are not readable images.*S005_001_00000005"):
        ckplus(root)


def test_a_truncated_jpeg_is_caught_by_check_and_refused_by_the_reader(tmp_path):
    """A truncated file has a valid signature: only decoding it finds the damage."""
    import cv2
    from fernb.data.real import rafdb
    root = write_rafdb(tmp_path / "raf")
    victim = sorted((root / "Image" / "aligned").glob("*.jpg"))[0]
    noise = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    cv2.imwrite(str(victim.with_suffix(".tmp.jpg")), noise)
    data = victim.with_suffix(".tmp.jpg").read_bytes()
    victim.with_suffix(".tmp.jpg").unlink()
    victim.write_bytes(data[: len(data) // 2])
    report = check_dataset("rafdb", root)
    assert any("do not decode completely" in p and victim.name in p for p in report.problems)
    assert check_dataset("rafdb", root, decode=False).ok, "a signature check cannot see it"
    with pytest.raises(ValueError, match=f"(?s)do not decode completely.*{victim.name}"):
        rafdb(root, size=24)


def test_a_truncated_png_is_caught_in_a_folder_dataset(tmp_path):
    from fernb.data.real import folder
    from fernb.data.synthetic import export, generate
    out = export(generate("synth-lab", n_subjects=2, size=48), tmp_path / "f")
    victim = out / "images" / "000003.png"
    victim.write_bytes(victim.read_bytes()[:200])
    report = check_dataset("folder", out)
    assert any("do not decode completely" in p and "000003.png" in p for p in report.problems)
    with pytest.raises(ValueError, match="(?s)do not decode completely.*000003.png"):
        folder(out, size=48)


def test_ckplus_missing_peak_frame_is_reported(tmp_path):
    """The emotion file names the peak frame; without it the last frames are not the peak."""
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1, n_frames=5)
    peak = root / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000005.png"
    peak.unlink()
    report = check_dataset("ckplus", root)
    assert any("peak frame(s) named by an emotion file are missing" in p
               and "S005_001_00000005.png" in p for p in report.problems)
    with pytest.raises(ValueError, match="S005_001_00000005.png"):
        ckplus(root)


def test_ckplus_frames_after_the_peak_are_not_labelled(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1, n_frames=5)
    extra = root / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000006.png"
    extra.write_bytes((extra.parent / "S005_001_00000005.png").read_bytes())
    (root / "Landmarks" / "S005" / "001" / "S005_001_00000006_landmarks.txt").write_text(
        (root / "Landmarks" / "S005" / "001" / "S005_001_00000005_landmarks.txt").read_text())
    ds = ckplus(root, size=24, crop="landmarks")
    assert list(ds.meta["frame"][ds.meta["sequence"] == "S005_001"]) == [1, 3, 4, 5]


def test_folder_dataset_check_names_each_bad_row(tmp_path):
    import pandas as pd
    from fernb.data.synthetic import export, generate
    out = export(generate("synth-lab", n_subjects=2, size=48), tmp_path / "f")
    assert check_dataset("folder", out).ok
    table = pd.read_csv(out / "labels.csv", dtype={"subject": object})
    table.loc[3, "label"] = "joy"
    table.loc[4, "subject"] = "x"
    table.loc[5, "x3"] = np.nan
    table.to_csv(out / "labels.csv", index=False)
    (out / table.loc[6, "path"]).unlink()
    problems = " ".join(check_dataset("folder", out).problems)
    assert "1 label(s) are not one of" in problems and "lines 5" in problems
    assert "1 subject value(s) are not integers: lines 6" in problems
    assert "missing landmark values: lines 7" in problems
    assert "1 listed image(s) missing" in problems and table.loc[6, "path"] in problems
    table.drop(columns="subject").to_csv(out / "labels.csv", index=False)
    assert "lacks column(s) ['subject']" in check_dataset("folder", out).problems[0]


def test_labels_without_images_are_problems(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1)
    orphan = root / "Emotion" / "S099" / "001" / "S099_001_00000005_emotion.txt"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("   3.0000000e+00\n")
    assert any("image sequence is missing" in p for p in check_dataset("ckplus", root).problems)
    raf = write_rafdb(tmp_path / "raf", n_train=2, n_test=1)
    (raf / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    report = check_dataset("rafdb", raf)
    assert any("1 labelled image(s) missing" in p and "train_00002" in p for p in report.problems)


def test_bad_names_rows_and_mismatched_files(tmp_path):
    jaffe = write_jaffe(tmp_path / "jaffe", n_subjects=1)
    (jaffe / "KA.XX1.99.tiff").write_bytes((jaffe / "KA.NE1.1.tiff").read_bytes())
    assert any("KA.XX1.99.tiff" in p for p in check_dataset("jaffe", jaffe).problems)
    fer = write_fer2013(tmp_path / "fer", n_per_split=2)
    text = (fer / "fer2013.csv").read_text().splitlines()
    text[1] = "3,1 2 3,Training"
    (fer / "fer2013.csv").write_text("\n".join(text) + "\n")
    assert any("not 2304 values" in p for p in check_dataset("fer2013", fer).problems)
    ferplus = write_ferplus(tmp_path / "ferplus")
    lines = (ferplus / "fer2013new.csv").read_text().splitlines()
    (ferplus / "fer2013new.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert any("row order" in p for p in check_dataset("ferplus", ferplus).problems)
    sfew = write_sfew(tmp_path / "sfew", n_train=1, n_val=1)
    (sfew / "Train" / "Contempt").mkdir()
    assert any("Train/Contempt" in p for p in check_dataset("sfew", sfew).problems)


def test_subset_counts_warn_but_pass_and_format_reports(tmp_path):
    report = check_dataset("jaffe", write_jaffe(tmp_path / "jaffe", n_subjects=1))
    assert report.ok and any("published 213" in w for w in report.warnings)
    text = report.format()
    assert "OK" in text and "anger" in text and "(published 30)" in text
    assert report.summary["all"]["classes"]["anger"] == [1, 30]


def test_cache_round_trip_and_key(tmp_path):
    root = write_ckplus(tmp_path / "ck", n_subjects=1, n_sequences=1)
    first = ckplus(root, size=24, crop="landmarks", cache_dir=tmp_path / "cache")
    path = cache_path("ckplus", root, dict(size=24, crop="landmarks", grayscale=True,
                                           clahe=False, margin=0.0, n_classes=8), tmp_path / "cache")
    assert path.exists() and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = ckplus(root, size=24, crop="landmarks", cache_dir=tmp_path / "cache")
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.meta["sequence"], again.meta["sequence"])
    assert cache_path("ckplus", root, {"size": 32}, "c") != cache_path("ckplus", root, {"size": 24}, "c")
    ckplus(root, size=32, crop="landmarks", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    restored = load_npz(save_npz(first, tmp_path / "x.npz"))
    np.testing.assert_array_equal(restored.landmarks, first.landmarks)
    assert restored.classes == first.classes and restored.name == "ckplus"


def test_bad_parameters_raise_before_reading(tmp_path):
    with pytest.raises(ValueError, match="size"):
        ckplus(tmp_path, size=0)
    with pytest.raises(ValueError, match="crop"):
        ckplus(tmp_path, crop="mtcnn")
    with pytest.raises(ValueError, match="n_classes"):
        READERS["affectnet"](tmp_path, n_classes=6)
