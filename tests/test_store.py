"""The run store: keys from settings, reuse, resumption, concurrency and cleaning."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fernb.store import Entry, Job, Store, execute

CALLS: list[str] = []


def square(job: Job, entry: Entry, store: Store) -> dict:
    """Stores x**2 of its spec; a 'checkpoint' file marks work done before an interruption."""
    CALLS.append(job.label)
    x = job.spec["x"]
    marker = entry.checkpoint / "half.txt"
    resumed = marker.exists()
    marker.write_text("half")
    if job.spec.get("fail_once") and not resumed:
        raise KeyboardInterrupt
    entry.save_arrays("out", value=np.array([x * x]))
    return {"resumed": resumed}


def total(job: Job, entry: Entry, store: Store) -> dict:
    """Sums the values its needs stored."""
    CALLS.append(job.label)
    value = sum(float(store.get(n).arrays("out")["value"][0]) for n in job.needs)
    entry.save_arrays("out", value=np.array([value]))
    return {"value": value}


def job(x: float, **spec) -> Job:
    return Job("demo.square", {"x": x, **spec}, square, label=f"square {x}")


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()


def test_a_stored_job_is_reused_and_a_changed_one_trained(tmp_path: Path) -> None:
    store = Store(tmp_path)
    outcome = store.run([job(2), job(3)])
    assert CALLS == ["square 2", "square 3"] and outcome.trained == ["square 2", "square 3"]
    outcome = store.run([job(2), job(4)])
    assert CALLS[2:] == ["square 4"]
    assert outcome.reused == ["square 2"] and outcome.trained == ["square 4"]
    assert str(outcome) == "reused 1 stored result(s), trained 1: square 4"
    entry = store.get(job(4))
    assert entry.arrays("out")["value"].tolist() == [16]
    assert entry.record["spec"] == {"x": 4} and entry.record["summary"] == {"resumed": False}


def test_the_key_follows_what_the_result_depends_on() -> None:
    assert job(2).key == job(2).key and job(2).key != job(2.0000001).key
    assert job(2).key != job(2, extra=1).key
    relabelled = Job("demo.square", {"x": 2}, square, label="another name")
    assert relabelled.key == job(2).key  # a label is not a setting
    assert Job("demo.square", {"x": 2}, square, version=2).key != job(2).key
    assert job(2).key.startswith("demo.square/")


def test_needs_run_first_and_a_changed_need_reruns_what_reads_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    summed = Job("demo.total", {}, total, needs=(job(2), job(3)), label="total")
    store.run([summed])
    assert CALLS == ["square 2", "square 3", "total"]
    assert store.get(summed).arrays("out")["value"].tolist() == [13]
    other = Job("demo.total", {}, total, needs=(job(2), job(5)), label="total")
    assert other.key != summed.key
    store.run([other])
    assert CALLS[3:] == ["square 5", "total"]
    assert store.pending([other]) == []


def test_an_interrupted_job_is_not_stored_and_resumes_from_its_checkpoint(tmp_path) -> None:
    store = Store(tmp_path)
    flaky = job(3, fail_once=True)
    with pytest.raises(KeyboardInterrupt):
        store.run([flaky])
    assert not store.entry(flaky).complete and store.pending([flaky]) == [flaky]
    with pytest.raises(FileNotFoundError, match="holds no finished result"):
        store.get(flaky)
    store.run([flaky])
    assert store.get(flaky).record["summary"] == {"resumed": True}


def test_a_corrupt_artifact_is_named_by_its_path(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.run([job(2)])
    entry = store.get(job(2))
    (entry.path / "out.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"out\.npz is corrupt.*delete"):
        entry.arrays("out")
    (entry.path / "out.npz").unlink()
    with pytest.raises(FileNotFoundError, match="no stored 'out.npz'"):
        entry.arrays("out")


SLOW = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import numpy as np
from fernb.store import Job, execute

def slow(job, entry, store):
    print("started", flush=True)
    go = Path({go!r})
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:  # until the test says go
        time.sleep(0.05)
    entry.save_arrays("out", value=np.array([1.0]))

print(execute(Job("demo.slow", {{}}, slow), {root!r}), flush=True)
"""


def test_two_processes_on_one_job_take_turns_and_train_it_once(tmp_path: Path) -> None:
    # The first process holds the job until the second has said it waits, whatever the
    # machine's speed.
    go = tmp_path / "go"
    script = SLOW.format(tests=str(Path(__file__).parent), root=str(tmp_path / "store"),
                         go=str(go))
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "started"
    second = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        waiting = second.stdout.readline().strip()
    finally:
        go.touch()
    assert waiting.startswith("Waiting: another process is running demo.slow")
    assert first.stdout.read().strip().endswith("True")
    assert second.stdout.read().strip().splitlines()[-1] == "False"  # found it stored
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0


def test_clean_removes_entries_unused_for_a_while(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.run([job(2), job(3)])
    old = store.get(job(2)).path / "entry.json"
    month_ago = time.time() - 40 * 86400
    os.utime(old, (month_ago, month_ago))
    assert store.size()[0] == 2
    removed, freed = store.clean(older_than_days=30, dry_run=True)
    assert removed == [old.parent] and freed > 0 and old.exists()
    store.run([job(2)])  # using it again keeps it
    assert store.clean(older_than_days=30) == ([], 0)
    os.utime(old, (month_ago, month_ago))
    removed, _ = store.clean(older_than_days=30)
    assert removed == [old.parent] and not old.parent.exists()
    assert store.entries() == [store.get(job(3)).path]
    store.clean(older_than_days=None)
    assert store.size() == (0, 0)


def test_execute_is_the_unit_a_scheduler_runs(tmp_path: Path) -> None:
    assert execute(job(6), tmp_path) is True
    assert execute(job(6), tmp_path) is False
    assert Store(tmp_path).get(job(6)).arrays("out")["value"].tolist() == [36]
