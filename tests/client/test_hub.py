"""Local fan-out of events to subscriptions and callbacks (no network)."""

from __future__ import annotations

import asyncio

from appliance.client.events import Event, EventHub


def ev(kind: str, cid: str | None = "default:a") -> Event:
    return Event(type=kind, call_cid=cid)


async def test_filters_by_type_call_and_predicate() -> None:
    hub = EventHub()
    rings = hub.subscribe("call.ring")
    call_a = hub.subscribe(call_cid="default:a")
    custom = hub.subscribe(where=lambda e: e.type.startswith("custom"))
    for event in (
        ev("call.ring"),
        ev("call.ring", "default:b"),
        ev("custom"),
        ev("connection.lost", None),
    ):
        hub.emit(event)
    assert rings.types == frozenset({"call.ring"})
    assert [(e.type, e.cid) for e in [await rings.get(), await rings.get()]] == [
        ("call.ring", "default:a"),
        ("call.ring", "default:b"),
    ]
    # Connection events (no call) reach per-call subscriptions too.
    assert [(await call_a.get()).type for _ in range(3)] == [
        "call.ring",
        "custom",
        "connection.lost",
    ]
    assert (await custom.get()).type == "custom"


async def test_slow_consumer_drops_its_oldest_event() -> None:
    hub = EventHub()
    sub = hub.subscribe(maxsize=2)
    for n in range(3):
        hub.emit(Event(type=f"e{n}"))
    assert sub.dropped == 1
    assert [(await sub.get()).type, (await sub.get()).type] == ["e1", "e2"]


async def test_close_ends_async_for_and_unsubscribes() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    hub.emit(ev("one"))

    async def consume() -> list[str]:
        return [event.type async for event in sub]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(task, 2) == ["one"]
    hub.emit(ev("two"))
    assert sub not in hub._subscriptions


async def test_callbacks_sync_and_async_and_removal() -> None:
    hub = EventHub()
    seen: list[str] = []
    done = asyncio.Event()

    async def async_callback(event: Event) -> None:
        seen.append("async:" + event.type)
        done.set()

    def failing(event: Event) -> None:
        raise RuntimeError("consumer bug")

    remove = hub.on("call.ring", lambda e: seen.append("sync:" + e.type))
    hub.on(["call.ring"], async_callback)
    hub.on(None, failing)
    hub.emit(ev("call.ring"))
    await asyncio.wait_for(done.wait(), 2)
    remove()
    hub.emit(ev("call.ring"))
    await asyncio.sleep(0.01)
    assert seen == ["sync:call.ring", "async:call.ring", "async:call.ring"]
