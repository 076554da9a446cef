"""An exactness audit's verdict per layer, and the audit's result (no database, no training)."""

from __future__ import annotations

from service.exactness.runner import APPROXIMATE, CHANGED, AuditedLayer, compare, report
from unlearning.artifacts import artifact_ref

REF, OTHER = artifact_ref(b"weights"), artifact_ref(b"other weights")


def _layer(*, approximate: bool = False, current: bool = True) -> AuditedLayer:
    return AuditedLayer(7, 1, 0, 2, REF, approximate, current)


def test_a_layer_matches_only_when_retrain_record_and_store_agree() -> None:
    ok = compare(_layer(), REF, REF, active=True)
    assert (ok.match, ok.problem, ok.recomputed, ok.stored_digest) == (True, None, REF, REF)
    retrained = compare(_layer(), OTHER, REF, active=True)
    assert retrained.match is False and "retrain from scratch" in (retrained.problem or "")
    swapped = compare(_layer(), REF, OTHER, active=True)
    assert swapped.problem == "the stored bytes are not the recorded artifact"
    missing = compare(_layer(), REF, None, active=True)
    assert missing.problem == "the recorded artifact is missing from the store"


def test_approximate_and_changed_layers_are_skipped_not_compared() -> None:
    assert compare(_layer(approximate=True), OTHER, OTHER, active=True).skipped == APPROXIMATE
    assert compare(_layer(current=False), REF, REF, active=True).skipped == CHANGED
    gone = compare(_layer(), REF, REF, active=False)
    assert (gone.skipped, gone.match, gone.recomputed) == (CHANGED, None, None)


def test_the_result_of_an_audit() -> None:
    good, bad = compare(_layer(), REF, REF, active=True), compare(_layer(), REF, OTHER, active=True)
    skipped = compare(_layer(approximate=True), REF, REF, active=True)
    assert report([good, skipped]).result == "passed"
    failed = report([good, bad, skipped])
    assert failed.result == "failed" and [c.layer_id for c in failed.mismatched] == [7]
    assert "FAILED: 1 of 2" in failed.note() and "1 skipped" in failed.note()
    assert report([skipped]).result == "inconclusive"
    assert report([]).result == "inconclusive"
