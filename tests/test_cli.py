"""The `fernb data` commands as a user types them."""
from __future__ import annotations

import csv
from pathlib import Path

from fernb import cli


def test_data_synth_exports_images_and_labels(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth"
    code = cli.main(["data", "synth", "--preset", "synth-lab", "--size", "48",
                     "--n-subjects", "2", "--seed", "0", "--out", str(out)])
    assert code == 0 and "wrote 56 faces" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert len(rows) == 56 and (out / rows[0]["path"]).exists()
    assert {r["label"] for r in rows} == {"neutral", "happiness", "sadness", "surprise",
                                            "fear", "disgust", "anger", "contempt"}


def test_data_synth_output_is_checked_and_read_as_the_folder_dataset(tmp_path: Path,
                                                                      capsys) -> None:
    from fernb.data import load_dataset
    out = tmp_path / "synth"
    assert cli.main(["data", "synth", "--preset", "synth-wild", "--size", "48",
                     "--n-subjects", "2", "--out", str(out)]) == 0
    assert cli.main(["data", "check", "folder", "--root", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert len(load_dataset("folder", root=str(out), size=48)) == 80


def test_data_synth_passes_the_mechanism_knobs(tmp_path: Path, capsys) -> None:
    from fernb.labels import EMOTIONS_7
    out = tmp_path / "cued"
    args = ["data", "synth", "--preset", "synth-wild", "--size", "48", "--n-subjects", "2"]
    assert cli.main(args + ["--distractor", "1", "--blend-pairs", "facs",
                            "--label-from-mixture", "--motion", "0.5", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert len(rows) == 80 and {"cue", "cue_corner", "clean_label"} <= set(rows[0])
    assert all(EMOTIONS_7[int(r["cue"])] == r["label"] for r in rows)
    assert cli.main(args + ["--distractor", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "knob 'distractor' must be a cue strength in [0, 1]" in capsys.readouterr().err


def test_data_check_exit_codes(tmp_path: Path, capsys) -> None:
    from fixtures import write_jaffe
    root = write_jaffe(tmp_path / "jaffe")
    assert cli.main(["data", "check", "jaffe", "--root", str(root)]) == 0
    assert cli.main(["data", "check", "jaffe", "--root", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().out.lower()


def test_data_list_names_every_reader(capsys) -> None:
    assert cli.main(["data", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"synth-lab", "synth-wild", "ckplus", "jaffe", "sfew", "fer2013", "ferplus",
            "rafdb", "affectnet"} <= set(names)


NOTEBOOK_STACK = ("papermill", "nbformat", "nbclient", "jsonschema")


def test_data_and_params_commands_do_not_import_the_notebook_stack(tmp_path: Path
                                                                  ) -> None:
    import subprocess
    import sys
    script = ("import sys\nfrom fernb import cli\n"
              f"assert cli.main(['data', 'synth', '--size', '48', '--n-subjects', '2', "
              f"'--out', {str(tmp_path / 'out')!r}]) == 0\n"
              "assert cli.main(['data', 'list']) == 0\n"
              "assert cli.main(['params', '01_esr']) == 0\n"
              f"print(sorted(m for m in {NOTEBOOK_STACK!r} if m in sys.modules))\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=root)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_clean_says_what_it_removes(tmp_path: Path, capsys) -> None:
    import os
    import time
    import numpy as np
    from fernb.store import Job, Store

    def write(job, entry, store):
        entry.save_arrays("out", value=np.zeros(1000))

    store = Store(tmp_path)
    store.run([Job("demo.write", {"n": n}, write) for n in range(2)])
    old = store.entries()[0] / "entry.json"
    then = time.time() - 60 * 86400
    os.utime(old, (then, then))
    capsys.readouterr()
    assert cli.main(["clean", "--store", str(tmp_path), "--dry-run"]) == 0
    assert "would remove 1 stored run(s)" in capsys.readouterr().out and old.exists()
    assert cli.main(["clean", "--store", str(tmp_path)]) == 0
    assert "removed 1 stored run(s)" in capsys.readouterr().out and not old.exists()
    assert cli.main(["clean", "--store", str(tmp_path), "--all"]) == 0
    assert "removed 1 stored run(s)" in capsys.readouterr().out and store.size() == (0, 0)
