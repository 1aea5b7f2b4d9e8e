"""Processors for messages: notification-send (including admin-alert jobs) and email-send."""

from __future__ import annotations

import logging
from typing import Any

from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue_worker.processors._common import (
    bind,
    opt_bool,
    opt_dict,
    opt_str,
    payload,
    req_str,
)
from jetqueue_worker.processors.demo import simulate
from jetqueue_worker.processors.services import Services

log = logging.getLogger(__name__)

ADMIN_ALERT = "admin-alert"  # job name the worker enqueues when a job is dead-lettered


async def notification_send(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Store an in-app notification and optionally e-mail it (seed §2.3)."""
    await simulate(ctx)
    data = payload(ctx)
    user_id = req_str(data, "user_id")
    title = req_str(data, "title")
    message = req_str(data, "message")
    notification = {
        "user_id": user_id,
        "type": req_str(data, "type"),
        "title": title,
        "message": message,
        "related_entity_type": opt_str(data, "related_entity_type"),
        "related_entity_id": opt_str(data, "related_entity_id"),
    }
    send_email = opt_bool(data, "send_email")
    await ctx.progress(20)
    notification_id = await s.notifications.create_notification(notification)
    await ctx.progress(50)
    email_sent = False
    if send_email:
        address = await s.notifications.get_user_email(user_id)
        if address:
            url = s.notifications.get_action_url(notification["related_entity_type"], notification["related_entity_id"])
            await s.email.send(address, title, message, url)
            email_sent = True
        else:
            log.info("user %s has no e-mail address; notification %s not e-mailed", user_id, notification_id)
    await ctx.progress(100)
    return {"notification_id": notification_id, "email_sent": email_sent}


async def admin_alert(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Notify every administrator, e.g. that a job was dead-lettered (seed §4.2)."""
    await simulate(ctx)
    data = payload(ctx)
    audience = opt_str(data, "audience", "admins")
    if audience != "admins":
        raise PermanentError(f"field 'audience' must be 'admins' for {ADMIN_ALERT} jobs, got {audience!r}")
    alert = {
        "type": opt_str(data, "type", "ALERT"),
        "severity": opt_str(data, "severity", "HIGH"),
        "title": req_str(data, "title"),
        "message": req_str(data, "message"),
        "details": opt_dict(data, "details"),
    }
    await ctx.progress(20)
    ids = await s.notifications.notify_admins(alert)
    await ctx.progress(100)
    return {"notification_id": ids[0] if ids else None, "notification_ids": ids, "audience": "admins"}


async def email_send(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Send one e-mail."""
    await simulate(ctx)
    data = payload(ctx)
    to = req_str(data, "to")
    if "@" not in to:
        raise PermanentError(f"field 'to' is not an e-mail address: {to!r}")
    subject = req_str(data, "subject")
    body = req_str(data, "body")
    await ctx.progress(30)
    message_id = await s.email.send(to, subject, body, opt_str(data, "action_url"))
    await ctx.progress(100)
    return {"message_id": message_id, "to": to}


def register(registry: ProcessorRegistry, services: Services) -> None:
    """Register this module's processors into ``registry``."""
    registry.register("notification-send", bind(notification_send, services))
    registry.register("notification-send", bind(admin_alert, services), name=ADMIN_ALERT)
    registry.register("email-send", bind(email_send, services))
