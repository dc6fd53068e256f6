"""Unit tests of the binding decision (migration/scheduler.py `plan`). Pure logic, no etcd."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from migration.scheduler import Rebind, plan
from migration.store import Binding, TaskRecord, WorkerRecord


def task(name: str, *sources: str) -> TaskRecord:
    return TaskRecord(
        name=name, spec={"name": name, "sources": [{"source-id": s} for s in sources]}
    )


def worker(name: str, *, draining: bool = False) -> WorkerRecord:
    return WorkerRecord(name=name, draining=draining)


def binding(task: str, source: str, worker: str, epoch: int = 1) -> Binding:
    return Binding(task=task, source=source, worker=worker, epoch=epoch)


def targets(make: list[Rebind]) -> dict[tuple[str, str], str]:
    return {(r.task, r.source): r.worker for r in make}


def test_new_subtasks_are_bound_with_no_current_binding() -> None:
    make, remove = plan([task("t", "ks/-80")], [worker("w1")], [])
    assert make == [Rebind("t", "ks/-80", "w1", None)]
    assert remove == []


def test_new_binding_goes_to_the_least_loaded_worker() -> None:
    bindings = [binding("a", "s1", "w1"), binding("a", "s2", "w1"), binding("b", "s1", "w2")]
    tasks = [task("a", "s1", "s2"), task("b", "s1"), task("c", "s1")]
    make, _ = plan(tasks, [worker("w1"), worker("w2"), worker("w3")], bindings)
    assert targets(make) == {("c", "s1"): "w3"}


def test_new_bindings_spread_over_workers_counting_each_one_made() -> None:
    make, _ = plan([task("t", "s1", "s2", "s3", "s4")], [worker("w2"), worker("w1")], [])
    assert Counter(r.worker for r in make) == {"w1": 2, "w2": 2}
    # Ties go to the first name: deterministic across leaders.
    assert make[0].worker == "w1"


def test_live_bindings_are_kept() -> None:
    bindings = [binding("t", "s1", "w1", epoch=4)]
    make, remove = plan([task("t", "s1")], [worker("w1"), worker("w2")], bindings)
    assert make == []
    assert remove == []


def test_binding_of_a_dead_worker_is_rebound_with_the_current_one_passed_along() -> None:
    dead = binding("t", "s1", "gone", epoch=7)
    make, remove = plan([task("t", "s1")], [worker("w1")], [dead])
    assert make == [Rebind("t", "s1", "w1", dead)]
    assert make[0].current is not None and make[0].current.epoch == 7
    assert remove == []


def test_dead_workers_bindings_do_not_count_as_load() -> None:
    bindings = [binding("t", "s1", "gone"), binding("t", "s2", "gone"), binding("t", "s3", "w2")]
    make, _ = plan([task("t", "s1", "s2", "s3")], [worker("w1"), worker("w2")], bindings)
    assert targets(make) == {("t", "s1"): "w1", ("t", "s2"): "w1"}


def test_draining_worker_keeps_its_bindings_but_gets_nothing_new() -> None:
    bindings = [binding("t", "s1", "w1")]
    make, remove = plan(
        [task("t", "s1", "s2")], [worker("w1", draining=True), worker("w2")], bindings
    )
    assert targets(make) == {("t", "s2"): "w2"}
    assert remove == []


def test_draining_worker_load_still_counts_for_no_one_else() -> None:
    make, _ = plan([task("t", "s1")], [worker("a", draining=True)], [])
    assert make == []


def test_only_draining_workers_means_a_dead_binding_waits() -> None:
    dead = binding("t", "s1", "gone")
    make, remove = plan([task("t", "s1")], [worker("w1", draining=True)], [dead])
    assert make == []
    assert remove == []


def test_bindings_of_deleted_tasks_are_removed() -> None:
    old = binding("deleted", "s1", "w1")
    orphan_source = binding("t", "dropped-source", "w1")
    kept = binding("t", "s1", "w1")
    make, remove = plan([task("t", "s1")], [worker("w1")], [old, orphan_source, kept])
    assert make == []
    assert {(b.task, b.source) for b in remove} == {("deleted", "s1"), ("t", "dropped-source")}
    assert len(remove) == 2


def test_bindings_of_deleted_tasks_on_dead_workers_are_removed_not_rebound() -> None:
    old = binding("deleted", "s1", "gone")
    make, remove = plan([], [worker("w1")], [old])
    assert make == []
    assert remove == [old]


def test_no_live_worker_binds_nothing() -> None:
    make, remove = plan([task("t", "s1", "s2")], [], [binding("t", "s1", "gone")])
    assert make == []
    assert remove == []


def test_rebind_describes_new_and_taken_over_bindings() -> None:
    assert Rebind("t", "s", "w1", None).describe() == "t/s -> w1 (new)"
    taken = Rebind("t", "s", "w2", binding("t", "s", "w1", epoch=3))
    assert taken.describe() == "t/s -> w2 (from w1 (epoch 3))"


_names = st.sampled_from(["w1", "w2", "w3", "w4"])


@settings(max_examples=200, deadline=None)
@given(
    sources=st.lists(st.sampled_from(["s1", "s2", "s3", "s4", "s5"]), unique=True, max_size=5),
    live=st.lists(st.tuples(_names, st.booleans()), max_size=4, unique_by=lambda w: w[0]),
    bound=st.dictionaries(st.sampled_from(["s1", "s2", "s3", "s6"]), _names | st.just("gone")),
)
def test_plan_binds_every_subtask_once_to_a_live_taker_and_keeps_live_ones(
    sources: list[str], live: list[tuple[str, bool]], bound: dict[str, str]
) -> None:
    workers = [worker(n, draining=d) for n, d in live]
    alive = {n for n, _ in live}
    takers = {n for n, d in live if not d}
    bindings = [binding("t", s, w) for s, w in bound.items()]
    make, remove = plan([task("t", *sources)], workers, bindings)
    made = targets(make)
    assert len(made) == len(make)
    for s in sources:
        if bound.get(s) in alive:
            assert ("t", s) not in made
        elif takers:
            assert made[("t", s)] in takers
        else:
            assert ("t", s) not in made
    assert {b.source for b in remove} == set(bound) - set(sources)
    # Balanced: after the plan, loads of takers differ by at most one unless kept bindings
    # already made them uneven.
    if takers and not any(w in alive for w in bound.values()):
        loads = Counter(made.values())
        assert max(loads.get(w, 0) for w in takers) - min(loads.get(w, 0) for w in takers) <= 1
