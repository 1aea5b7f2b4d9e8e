"""Synchronous bid scoring for POST /order/bid-evaluation (seed §3.2)."""

from __future__ import annotations

from typing import Any

from jetqueue_producer.schemas import BidCandidate, EvaluationPolicy


def _norm_low(value: float, lo: float, hi: float) -> float:
    """1.0 for the lowest value in the set, 0.0 for the highest (lower is better)."""
    return 1.0 if hi == lo else (hi - value) / (hi - lo)


def score_candidates(cands: list[BidCandidate], policy: EvaluationPolicy) -> list[dict[str, Any]]:
    """Composite score 0-100 per candidate, ranked best first.

    Price, EI and ETA are min-max normalised within the bid (lower is better),
    rating is out of 5; weights are normalised to sum to 1.
    """
    if not cands:
        return []
    total_w = policy.price_weight + policy.ei_weight + policy.eta_weight + policy.rating_weight
    prices = [c.price for c in cands]
    eis = [c.ei for c in cands]
    etas = [c.eta_hours for c in cands]
    scored: list[dict[str, Any]] = []
    for c in cands:
        parts = {
            "price": _norm_low(c.price, min(prices), max(prices)),
            "ei": _norm_low(c.ei, min(eis), max(eis)),
            "eta": _norm_low(c.eta_hours, min(etas), max(etas)),
            "rating": c.rating / 5,
        }
        composite = (
            parts["price"] * policy.price_weight
            + parts["ei"] * policy.ei_weight
            + parts["eta"] * policy.eta_weight
            + parts["rating"] * policy.rating_weight
        ) / total_w
        scored.append(
            {
                "proposal_id": c.proposal_id,
                "composite_score": round(composite * 100, 2),
                "component_scores": {k: round(v * 100, 2) for k, v in parts.items()},
            }
        )
    scored.sort(key=lambda s: (-s["composite_score"], s["proposal_id"]))
    for rank, s in enumerate(scored, start=1):
        s["rank"] = rank
    return scored


def summarize(scores: list[dict[str, Any]]) -> dict[str, Any]:
    if not scores:
        return {"count": 0, "top_proposal_id": None, "top_score": None, "average_score": None}
    values = [s["composite_score"] for s in scores]
    return {
        "count": len(scores),
        "top_proposal_id": scores[0]["proposal_id"],
        "top_score": scores[0]["composite_score"],
        "average_score": round(sum(values) / len(values), 2),
        "spread": round(max(values) - min(values), 2),
    }
