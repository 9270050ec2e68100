from datetime import UTC, datetime

from appliance.client.events import Event
from appliance.client.models import CallResponse, JoinResponse

NS = 1_764_000_000_123_456_789


def call_body(**session: object) -> dict[str, object]:
    return {
        "call": {
            "type": "default",
            "id": "door-1",
            "cid": "default:door-1",
            "created_by": {"id": "door", "role": "user", "custom": {}},
            "custom": {"color": "red"},
            "settings": {
                "ring": {"auto_cancel_timeout_ms": 30000},
                "recording": {"mode": "disabled"},
            },
            "current_session_id": "s1",
            "session": {"id": "s1", "participants": [], **session},
            "created_at": NS,
            "updated_at": NS,
            "some_future_field": 1,
        },
        "members": [{"user_id": "alice", "role": "admin", "custom": {}, "created_at": NS}],
        "own_capabilities": [{"name": "join-call"}, "read-call"],
    }


def test_call_response_decodes_nanosecond_timestamps_and_settings() -> None:
    response = CallResponse.model_validate(call_body(accepted_by={"alice": NS}))
    call = response.call
    assert call.created_at == datetime.fromtimestamp(NS / 1e9, tz=UTC)
    assert call.created_at.tzinfo is UTC
    assert call.settings.ring is not None
    assert call.settings.ring.auto_cancel_timeout_ms == 30000
    assert response.own_capabilities == ["join-call", "read-call"]
    assert response.members[0].role == "admin"
    assert call.live_session is not None
    assert set(call.live_session.accepted_by) == {"alice"}


def test_ended_session_is_not_live() -> None:
    response = CallResponse.model_validate(call_body(ended_at=NS))
    assert response.call.live_session is None


def test_join_response_participants_accept_stream_and_our_names() -> None:
    body = call_body()
    body["session_id"] = "p-me"
    body["participants"] = [
        {"user_session_id": "p-1", "user": {"id": "bob"}, "joined_at": NS},
        {"session_id": "p-2", "user": {"id": "carol"}},
    ]
    body["ice_servers"] = [{"urls": ["turn:127.0.0.1"], "username": "u", "password": "c"}]
    join = JoinResponse.model_validate(body)
    assert [p.session_id for p in join.participants] == ["p-1", "p-2"]
    assert join.participants[0].user_id == "bob"
    assert join.ice_servers[0].urls == ["turn:127.0.0.1"]
    assert join.ice_servers[0].credential == "c"


def test_event_of_unexpected_shape_still_has_its_type() -> None:
    event = Event.parse({"type": "call.ring", "call": "not an object", "call_cid": "default:x"})
    assert event.type == "call.ring"
    assert event.cid == "default:x"


def test_signal_event_keeps_from() -> None:
    event = Event.parse(
        {"type": "call.signal", "call_cid": "default:x", "from": "p-1", "signal": {"kind": "offer"}}
    )
    assert event.from_ == "p-1"
    assert event.signal == {"kind": "offer"}
