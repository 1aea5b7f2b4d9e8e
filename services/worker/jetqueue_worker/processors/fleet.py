"""Processors for fleet and order work: ei-update, proposal-ranking, order-status-update, dispatch-optimize."""

from __future__ import annotations

import logging
from typing import Any

from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue_worker.processors._common import (
    bind,
    now_iso,
    opt_dict,
    opt_str,
    payload,
    req_list,
    req_number,
    req_str,
)
from jetqueue_worker.processors.demo import simulate
from jetqueue_worker.processors.services import Services

log = logging.getLogger(__name__)

EI_MIN, EI_MAX = 0.0, 200.0  # the range the seed's API accepts


async def ei_update(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Store a fleet's new EI, invalidate its cache and push the change (seed §2.1)."""
    await simulate(ctx)
    data = payload(ctx)
    fleet_id = req_str(data, "fleet_id")
    new_ei = req_number(data, "new_ei")
    if not EI_MIN <= new_ei <= EI_MAX:
        raise PermanentError(f"field 'new_ei' must be between {EI_MIN:g} and {EI_MAX:g}, got {new_ei:g}")
    await ctx.progress(10)
    old_ei = await s.ei.get_fleet_ei(fleet_id)
    await ctx.progress(20)
    grade = await s.ei.update_fleet_ei(fleet_id, new_ei)
    await ctx.progress(50)
    await s.ei.invalidate_ei_cache(fleet_id)
    await ctx.progress(70)
    await s.realtime.publish(
        f"fleet.{fleet_id}.ei", {"fleet_id": fleet_id, "old_ei": old_ei, "new_ei": new_ei, "ei_grade": grade}
    )
    await ctx.progress(100)
    return {"fleet_id": fleet_id, "old_ei": old_ei, "new_ei": new_ei, "ei_grade": grade, "updated_at": now_iso()}


async def proposal_ranking(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Re-score and re-rank every proposal of a bid and push the new order (seed §2.2)."""
    await simulate(ctx)
    data = payload(ctx)
    bid_id = req_str(data, "bid_id")
    opt_str(data, "new_proposal_id")  # informational; validated for type only
    await ctx.progress(10)
    bid = await s.proposals.get_bid(bid_id)
    if bid is None:
        raise PermanentError(f"bid {bid_id} not found")
    await ctx.progress(20)
    proposals = await s.proposals.get_proposals_for_bid(bid_id)
    await ctx.progress(40)
    ranked = await s.proposals.calculate_scores_and_rank(bid_id, proposals, bid.get("evaluation_policy") or {})
    await ctx.progress(70)
    await s.proposals.update_proposal_rankings(bid_id, ranked)
    await ctx.progress(85)
    await s.realtime.publish(f"bid.{bid_id}.ranking", {"bid_id": bid_id, "rankings": ranked})
    await ctx.progress(100)
    top = ranked[0] if ranked else {}
    return {
        "bid_id": bid_id,
        "ranked_count": len(ranked),
        "top_proposal_id": top.get("proposal_id"),
        "top_score": top.get("composite_score"),
    }


async def order_status_update(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Move an order to a new status and push the change; re-running with the same status is a no-op."""
    await simulate(ctx)
    data = payload(ctx)
    order_id = req_str(data, "order_id")
    status = req_str(data, "status")
    await ctx.progress(20)
    old_status = await s.orders.get_status(order_id)
    if old_status is None:
        raise PermanentError(f"order {order_id} not found")
    changed = old_status != status
    if changed:
        await ctx.progress(60)
        await s.orders.set_status(order_id, status)
        await ctx.progress(80)
        await s.realtime.publish(
            f"order.{order_id}.status", {"order_id": order_id, "old_status": old_status, "new_status": status}
        )
    await ctx.progress(100)
    return {
        "order_id": order_id,
        "old_status": old_status,
        "new_status": status,
        "changed": changed,
        "updated_at": now_iso(),
    }


async def dispatch_optimize(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Assign a batch of orders to fleets and store the plan (seed §2.4)."""
    await simulate(ctx)
    data = payload(ctx)
    batch_id = req_str(data, "batch_id")
    orders = req_list(data, "orders")
    goals = opt_dict(data, "optimization_goals")
    if not orders:
        raise PermanentError("field 'orders' must not be empty")
    for i, order in enumerate(orders):
        if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
            raise PermanentError(f"field 'orders[{i}]' must be an object with a string 'order_id'")
    await ctx.progress(10)
    await s.dispatch.validate_batch(batch_id, orders)
    await ctx.progress(20)
    fleets = await s.dispatch.fetch_fleet_data(orders)
    await ctx.progress(40)
    assignments = await s.dispatch.optimize_dispatch(orders, fleets, goals)
    await ctx.progress(80)
    await s.dispatch.store_optimization_results(batch_id, assignments)
    await ctx.progress(100)
    return {
        "batch_id": batch_id,
        "optimized_count": len(assignments),
        "total_cost_saving": sum(a.get("cost_saving") or 0 for a in assignments),
    }


def register(registry: ProcessorRegistry, services: Services) -> None:
    """Register this module's processors into ``registry``."""
    registry.register("ei-update", bind(ei_update, services))
    registry.register("proposal-ranking", bind(proposal_ranking, services))
    registry.register("order-status-update", bind(order_status_update, services))
    registry.register("dispatch-optimize", bind(dispatch_optimize, services))
