"""Round-robin properties: balanced within an import, continuous across imports, whatever the sizes."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from edcrm.imports.distribution import RoundRobin

telecaller_sets = st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True)


def run_import(ids, cursor: int, leads: int) -> tuple[Counter, int]:
    """What an import of `leads` leads does from the branch cursor: its counts and the new cursor."""
    rotation = RoundRobin(ids, cursor)
    return Counter(rotation.next() for _ in range(leads)), cursor + leads


@given(ids=telecaller_sets, sizes=st.lists(st.integers(0, 60), max_size=15), cursor=st.integers(0, 10**6))
def test_each_import_is_balanced_and_the_branch_stays_balanced_across_imports(ids, sizes, cursor):
    total = Counter()
    for size in sizes:
        counts, cursor = run_import(ids, cursor, size)
        assert sum(counts.values()) == size
        assert set(counts) <= set(ids)
        per_telecaller = [counts.get(i, 0) for i in ids]
        assert max(per_telecaller) - min(per_telecaller) <= 1
        total += counts
    # The imports continue one rotation: together they are balanced too.
    overall = [total.get(i, 0) for i in ids]
    assert max(overall) - min(overall) <= 1


@given(ids=telecaller_sets)
def test_n_one_lead_imports_over_n_telecallers_give_each_one_lead(ids):
    cursor, owners = 0, []
    for _ in ids:
        counts, cursor = run_import(list(reversed(ids)), cursor, 1)  # the order they were chosen in is moot
        owners += list(counts)
    assert sorted(owners) == sorted(ids)


@given(
    ids=telecaller_sets,
    batches=st.lists(st.tuples(st.sampled_from("AB"), st.integers(1, 40)), max_size=20),
    cursor=st.integers(0, 1000),
)
def test_interleaved_batches_of_two_imports_keep_each_import_balanced(ids, batches, cursor):
    """Two imports of one branch commit batches in turn: each keeps its own unbroken rotation (it starts
    at the cursor it first saw, and continues from its own count)."""
    started: dict[str, int] = {}
    assigned = Counter()
    counts = {"A": Counter(), "B": Counter()}
    for name, size in batches:
        start = started.setdefault(name, cursor)
        rotation = RoundRobin(ids, start, assigned[name])
        counts[name].update(rotation.next() for _ in range(size))
        assigned[name] += size
        cursor += size
    for name in "AB":
        per_telecaller = [counts[name].get(i, 0) for i in ids]
        assert max(per_telecaller) - min(per_telecaller) <= 1


@given(ids=telecaller_sets, start=st.integers(0, 10**6), counts=st.lists(st.integers(0, 50), max_size=6))
def test_taking_a_batch_of_ids_equals_taking_them_one_by_one(ids, start, counts):
    """A batch's telecallers come from take(); they are the ids next() gives, and the rotation goes on."""
    by_batch, one_by_one = RoundRobin(ids, start), RoundRobin(ids, start)
    for count in counts:
        assert by_batch.take(count) == [one_by_one.next() for _ in range(count)]
        assert by_batch.position == one_by_one.position
