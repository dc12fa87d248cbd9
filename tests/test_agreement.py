"""Inter-annotator agreement: kappas on known answers and against scikit-learn, plus the invariants
(symmetry, perfect agreement, relabeling classes) over random labels."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop import agreement
from loop.agreement import (
    against_consensus,
    cohen_kappa,
    consensus,
    count_matrix,
    fleiss_kappa,
    pairwise,
    per_class,
    specific_agreement,
    summary,
)

FAST = settings(max_examples=60, deadline=None)

# Wikipedia's "Fleiss' kappa" worked example: 10 items, 14 raters, 5 categories.
WIKIPEDIA = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


@st.composite
def label_pairs(draw, min_size=0):
    n_classes = draw(st.integers(1, 5))
    size = draw(st.integers(min_size, 30))
    labels = st.lists(st.integers(0, n_classes - 1), min_size=size, max_size=size)
    return np.array(draw(labels), dtype=int), np.array(draw(labels), dtype=int), n_classes


@st.composite
def ratings_dicts(draw):
    n_classes = draw(st.integers(1, 4))
    raters = ["ana", "bo", "cy", "di", "ed"]
    items = draw(st.dictionaries(st.integers(0, 40), st.dictionaries(st.sampled_from(raters),
                                                                     st.integers(0, n_classes - 1)),
                                 max_size=15))
    return items, n_classes


def test_docstring_examples():
    result = doctest.testmod(agreement)
    assert result.failed == 0 and result.attempted > 0


# --- Cohen's kappa -------------------------------------------------------------------------------

def test_cohen_kappa_known_answers():
    # p_o = 0.75; each rater half/half... a: (2, 2), b: (1, 3) -> p_e = (2 + 6) / 16 = 0.5.
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx(0.5)
    # The textbook 2x2 table: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b, 2) == pytest.approx(0.4)
    assert cohen_kappa([0, 1], [1, 0], 2) == pytest.approx(-1.0)       # systematic disagreement
    assert cohen_kappa([0, 0], [1, 1], 2) == 0.0                       # p_o = p_e = 0


def test_cohen_kappa_on_a_three_class_table():
    # Rows rater a, columns rater b: p_o = 23/30, p_e = (12*11 + 10*13 + 8*6) / 900 = 310/900,
    # kappa = (690 - 310) / (900 - 310) = 38/59.
    table = np.array([[10, 2, 0], [1, 8, 1], [0, 3, 5]])
    a, b = np.repeat(np.indices(table.shape).reshape(2, -1), table.ravel(), axis=1)   # one pair per item
    assert cohen_kappa(a, b, 3) == pytest.approx(38 / 59)
    assert cohen_kappa(a, b, 4) == pytest.approx(38 / 59)          # an unused class changes nothing


def test_cohen_kappa_undefined_cases():
    assert cohen_kappa([], [], 3) is None
    # p_e = 1: both raters always used class 2. Convention: 1.0 (they agreed on everything).
    assert cohen_kappa([2, 2, 2], [2, 2, 2], 3) == 1.0


def test_cohen_kappa_rejects_bad_input():
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([0, 1], [0], 2)
    with pytest.raises(ValueError, match="0..1"):
        cohen_kappa([0, 2], [0, 1], 2)


@FAST
@given(label_pairs(min_size=1))
def test_cohen_kappa_is_the_textbook_formula(case):
    """Against (p_o - p_e) / (1 - p_e) from the confusion table, written out here."""
    a, b, n_classes = case
    table = np.zeros((n_classes, n_classes))
    np.add.at(table, (np.asarray(a), np.asarray(b)), 1)
    table /= table.sum()
    p_o, p_e = np.trace(table), table.sum(axis=1) @ table.sum(axis=0)
    ours = cohen_kappa(a, b, n_classes)
    if np.isclose(p_e, 1.0):
        assert ours == 1.0
    else:
        assert ours == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-9)


@FAST
@given(label_pairs())
def test_cohen_kappa_symmetric_and_bounded(case):
    a, b, n_classes = case
    k = cohen_kappa(a, b, n_classes)
    assert k == pytest.approx(cohen_kappa(b, a, n_classes), abs=1e-12)
    assert k is None or -1 - 1e-9 <= k <= 1 + 1e-9


@FAST
@given(label_pairs(min_size=1))
def test_perfect_agreement_gives_one(case):
    a, _, n_classes = case
    assert cohen_kappa(a, a, n_classes) == pytest.approx(1.0)


@FAST
@given(label_pairs(min_size=1), st.randoms(use_true_random=False))
def test_relabeling_classes_leaves_kappa_unchanged(case, random):
    a, b, n_classes = case
    permutation = np.array(random.sample(range(n_classes), n_classes))
    relabeled = cohen_kappa(permutation[a], permutation[b], n_classes)
    assert relabeled == pytest.approx(cohen_kappa(a, b, n_classes))


# --- Fleiss' kappa -------------------------------------------------------------------------------

def test_fleiss_kappa_wikipedia_example():
    assert round(fleiss_kappa(WIKIPEDIA), 3) == 0.210


def test_fleiss_kappa_varying_raters_by_hand():
    # n = 2, 3, 3; P_i = 1, 1/3, 1 -> P = 7/9; p = (6/8, 2/8) -> P_e = 5/8; kappa = (7/9 - 5/8) / (3/8).
    assert fleiss_kappa([[2, 0], [1, 2], [3, 0]]) == pytest.approx(11 / 27)


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa(np.zeros((0, 3), dtype=int)) is None
    assert fleiss_kappa([[3, 0], [2, 0]]) == 1.0                      # every rating in one category
    assert fleiss_kappa([[2, 0], [0, 3]]) == 1.0                      # perfect agreement
    with pytest.raises(ValueError, match="item 1 has 1 rating"):
        fleiss_kappa([[2, 0], [1, 0]])


@FAST
@given(label_pairs(min_size=1))
def test_fleiss_with_two_raters_is_scotts_pi(case):
    a, b, n_classes = case
    counts = np.zeros((len(a), n_classes), dtype=int)
    np.add.at(counts, (np.arange(len(a)), a), 1)
    np.add.at(counts, (np.arange(len(b)), b), 1)
    pooled = np.bincount(np.concatenate([a, b]), minlength=n_classes) / (2 * len(a))
    observed, expected = np.mean(a == b), pooled @ pooled
    scott = 1.0 if np.isclose(expected, 1) else (observed - expected) / (1 - expected)
    assert fleiss_kappa(counts) == pytest.approx(scott)


@FAST
@given(st.integers(1, 10), st.integers(2, 4), st.randoms(use_true_random=False))
def test_fleiss_invariant_to_category_order(n_items, n_classes, random):
    rng = np.random.default_rng(random.randrange(2 ** 32))
    counts = rng.multinomial(random.randrange(2, 7), np.ones(n_classes) / n_classes, size=n_items)
    k = fleiss_kappa(counts)
    assert k == pytest.approx(fleiss_kappa(counts[:, rng.permutation(n_classes)]))
    assert k == pytest.approx(fleiss_kappa(counts[rng.permutation(n_items)]))
    assert k <= 1 + 1e-9


# --- ratings dictionaries ------------------------------------------------------------------------

RATINGS = {
    "a": {"ana": 0, "bo": 0, "cy": 0},
    "b": {"ana": 1, "bo": 1, "cy": 0},
    "c": {"ana": 1, "bo": 0},
    "d": {"ana": 2},                          # one rater: ignored everywhere
}


def test_count_matrix_ignores_single_rated_items():
    items, counts = count_matrix(RATINGS, 3)
    assert items == ["a", "b", "c"]
    assert counts.tolist() == [[3, 0, 0], [1, 2, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="rater 'bo' gave item 'x' class 5"):
        count_matrix({"x": {"ana": 0, "bo": 5}}, 3)
    with pytest.raises(ValueError, match="whole numbers 0..2"):
        count_matrix({"x": {"ana": 0, "bo": "1"}}, 3)
    assert count_matrix({"x": {"ana": np.int64(1), "bo": 1}}, 2)[1].tolist() == [[0, 2]]


def test_pairwise_by_hand():
    pairs = {p["raters"]: p for p in pairwise(RATINGS, 3)}
    assert list(pairs) == [("ana", "bo"), ("ana", "cy"), ("bo", "cy")]
    ana_bo = pairs["ana", "bo"]                   # a, b, c: (0,0), (1,1), (1,0)
    assert ana_bo["items"] == 3 and ana_bo["agreement"] == pytest.approx(2 / 3)
    assert ana_bo["kappa"] == pytest.approx(0.4)  # p_e = (1*2 + 2*1) / 9
    ana_cy = pairs["ana", "cy"]                   # a, b: (0,0), (1,0) -> p_o 1/2, p_e 1/2
    assert ana_cy["items"] == 2 and ana_cy["agreement"] == 0.5 and ana_cy["kappa"] == 0.0
    assert pairwise({"x": {"ana": 0}}, 2) == []


def test_per_class_by_hand():
    classes = per_class(RATINGS, 3)
    # Class 0 pairs: a: 3 both; b: 2 exactly one; c: 1 exactly one -> 2*3 / (6 + 3).
    assert classes[0] == {"class": 0, "items": 3, "agreement": pytest.approx(6 / 9)}
    # Class 1: b: 1 both, 2 exactly one; c: 1 exactly one -> 2 / (2 + 3).
    assert classes[1] == {"class": 1, "items": 2, "agreement": pytest.approx(2 / 5)}
    assert classes[2] == {"class": 2, "items": 0, "agreement": None}   # only on the single-rated item


def test_specific_agreement_is_one_for_unanimous_items():
    assert specific_agreement([[3, 0], [0, 2]]).tolist() == [1.0, 1.0]


def test_consensus_and_disagreement_with_it():
    assert consensus(RATINGS) == {"a": 0, "b": 1, "c": None}
    rows = against_consensus(RATINGS)
    # a: each rater's two others agree (all 0) -> no disagreement. b: ana's others (bo 1, cy 0) tie,
    # bo's others tie, cy's others say 1 and cy said 0. c: only one other rater, never counted.
    assert rows == [{"rater": "cy", "items": 2, "disagreements": 1, "rate": 0.5},
                    {"rater": "ana", "items": 1, "disagreements": 0, "rate": 0.0},
                    {"rater": "bo", "items": 1, "disagreements": 0, "rate": 0.0}]
    lonely = against_consensus({"x": {"ana": 0, "bo": 1}})
    assert [r["rate"] for r in lonely] == [None, None] and [r["items"] for r in lonely] == [0, 0]


def test_summary_by_hand():
    s = summary(RATINGS, 3)
    assert s["items"] == 3 and s["raters"] == 3 and s["worst"] == "cy"
    assert s["fleiss"] == pytest.approx(fleiss_kappa([[3, 0, 0], [1, 2, 0], [1, 1, 0]]))
    assert s["pairs"] == pairwise(RATINGS, 3) and s["classes"] == per_class(RATINGS, 3)
    empty = summary({"x": {"ana": 1}}, 2)
    assert empty == {"items": 0, "raters": 0, "fleiss": None, "pairs": [], "worst": None,
                     "classes": [{"class": 0, "items": 0, "agreement": None},
                                 {"class": 1, "items": 0, "agreement": None}]}
    assert summary({"x": {"ana": 1, "bo": 1, "cy": 1}}, 2)["worst"] is None   # nobody disagrees


@FAST
@given(ratings_dicts())
def test_shares_stay_in_unit_interval(case):
    ratings, n_classes = case
    s = summary(ratings, n_classes)
    for pair in s["pairs"]:
        assert 0 <= pair["agreement"] <= 1 and pair["items"] >= 1
        assert not np.isnan(pair["kappa"])
    for row in s["classes"]:
        assert row["agreement"] is None or 0 <= row["agreement"] <= 1
    for row in against_consensus(ratings):
        assert row["rate"] is None or 0 <= row["rate"] <= 1
        assert 0 <= row["disagreements"] <= row["items"]
    assert s["fleiss"] is None or s["fleiss"] <= 1 + 1e-9


@FAST
@given(ratings_dicts())
def test_pairwise_symmetric_in_raters(case):
    ratings, n_classes = case
    # Renaming so the alphabetical order reverses swaps which rater is "a" and which is "b" in every pair.
    alias = {"ana": "z5", "bo": "z4", "cy": "z3", "di": "z2", "ed": "z1"}
    original = {v: k for k, v in alias.items()}
    renamed = {item: {alias[name]: label for name, label in by.items()} for item, by in ratings.items()}
    forward = {frozenset(p["raters"]): (p["items"], p["agreement"], p["kappa"])
               for p in pairwise(ratings, n_classes)}
    backward = {frozenset(original[name] for name in p["raters"]): (p["items"], p["agreement"], p["kappa"])
                for p in pairwise(renamed, n_classes)}
    assert forward.keys() == backward.keys()
    for key, value in forward.items():
        assert value == pytest.approx(backward[key])
