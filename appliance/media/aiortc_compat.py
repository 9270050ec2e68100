"""Every use of aiortc's private API, in one place, checked against the aiortc it was written for.

aiortc has no public way to hear a keyframe request when it does not encode itself, to decide
which NACKed packets are worth resending, to read the codecs a transceiver negotiated, to read a
transport's packet counters synchronously, or to give an audio receiver another jitter buffer. The hooks below reach into aiortc 1.16.0 for those, one
section per hook, and nothing else in the package names an aiortc attribute that starts with
``_``. Importing this module with another aiortc raises
:class:`~appliance.errors.LibraryVersionError` naming the version found: porting means reading
each section against the new aiortc source and running ``tests/media/test_aiortc_compat.py`` and
``tests/media/test_aiortc_compat_jitter.py`` (and ``tests/media/test_retransmit.py`` for the
retransmission hook), which have one test per hook that fails when aiortc
stops behaving as the hook assumes.

What the package does *not* rely on: aiortc's ``RTCRtpSender._enabled``. aiortc sets it again
whenever a description is applied (``RTCRtpTransceiver._setCurrentDirection``), so a sender
disabled by hand starts sending at the next answer or ICE restart. Gate and mute live in our own
tracks instead (:mod:`appliance.media.gate`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RTP_HISTORY_SIZE,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from aiortc.stats import RTCStatsReport

from appliance.errors import LibraryVersionError

AIORTC_VERSION = "1.16.0"


def check_version(found: str) -> None:
    """Raise :class:`LibraryVersionError` unless ``found`` is the aiortc these hooks were written
    for."""
    if found != AIORTC_VERSION:
        raise LibraryVersionError(
            f"aiortc {found} is installed, but appliance.media.aiortc_compat was written for "
            f"aiortc {AIORTC_VERSION} (it uses aiortc's private API); install "
            f"aiortc=={AIORTC_VERSION} or port the hooks in {__name__}",
            name=__name__,
        )


check_version(getattr(aiortc, "__version__", "unknown"))


# -- keyframe requests: RTCRtpSender._send_keyframe ----------------------------------------------
#
# aiortc answers a peer's PLI or FIR by calling ``sender._send_keyframe()``, which only sets a
# flag its own encoder reads. Ready H.264 packets (passthrough) never pass that encoder, so the
# request would be lost; the hook wraps the method on one sender instance.

_KEYFRAME_HOOKED = "_appliance_keyframe_hook"
_FEEDBACK_HOOKED = "_appliance_feedback_hook"


def on_keyframe_request(sender: RTCRtpSender, listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the remote asks ``sender`` for a keyframe (PLI or FIR).

    aiortc's own flag is still set, so a sender that fell back to aiortc's encoder keeps
    working. Installed once per sender; later calls are ignored.
    """
    if getattr(sender, _KEYFRAME_HOOKED, False):
        return
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        listener()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    setattr(sender, _KEYFRAME_HOOKED, True)


# -- receiver feedback: RTCRtpSender._handle_rtcp_packet ---------------------------------------
#
# aiortc handles every RTCP packet addressed to a sender in ``_handle_rtcp_packet``: it
# retransmits on NACK (from its own history, as RTX when negotiated), calls ``_send_keyframe`` on
# PLI/FIR, hands a REMB to its own encoder (``target_bitrate``; with passthrough there is none) and
# folds receiver reports into its RTT estimate ``__rtt``. The hook wraps that method on one
# sender instance and, after aiortc has handled the packet, tells ``listener`` what the receiver
# said: ``("nack", lost packets)``, ``("pli", 1)``, ``("remb", bps)``,
# ``("report", fraction lost 0..1)`` and, when aiortc has an estimate, ``("rtt", seconds)``.


def on_rtcp_feedback(sender: RTCRtpSender, listener: Callable[[str, float], None]) -> None:
    """Call ``listener(kind, value)`` for the receiver's feedback to ``sender`` (see above)."""
    if getattr(sender, _FEEDBACK_HOOKED, False):
        return
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        await original(packet)
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    listener("report", report.fraction_lost / 256)
                    rtt = getattr(sender, "_RTCRtpSender__rtt", None)
                    if rtt is not None:
                        listener("rtt", float(rtt))
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            listener("nack", float(len(packet.lost)))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            listener("pli", 1.0)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if sender._ssrc in ssrcs:
                listener("remb", float(bitrate))

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]
    setattr(sender, _FEEDBACK_HOOKED, True)


# -- retransmissions: RTCRtpSender._retransmit ------------------------------------------------
#
# On a NACK aiortc calls ``sender._retransmit(seq)`` once per lost sequence number; it looks the
# packet up in its history ``__rtp_history`` (``RTP_HISTORY_SIZE`` = 128 packets, keyed by
# ``seq % 128``) and resends it (wrapped as RTX when negotiated) at once, however old it is and
# however congested the link. The hook wraps that method on one sender instance and asks
# ``decide(seq, age, size)`` first: ``age`` is how much older the packet is than the newest one
# sent, in seconds of its RTP clock (``__rtp_timestamp`` is the newest packet's timestamp), or
# ``None`` when the history no longer holds it (aiortc would silently skip it); ``size`` is its
# payload in bytes. ``decide`` returns how many copies to send: 0 (not resent), 1, or more (each
# another RTX packet with its own RTX sequence number; receivers drop the duplicate).

_RETRANSMIT_HOOKED = "_appliance_retransmit_hook"


def on_retransmit(
    sender: RTCRtpSender, decide: Callable[[int, float | None, int], int], clock_rate: int = 90000
) -> None:
    """``decide(seq, age seconds | None, payload bytes)`` says how many times to resend ``seq``
    (0: not at all)."""
    if getattr(sender, _RETRANSMIT_HOOKED, False):
        return
    original = sender._retransmit
    history: dict[int, Any] = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]

    async def retransmit(sequence_number: int) -> None:
        packet = history.get(sequence_number % RTP_HISTORY_SIZE)
        if packet is None or packet.sequence_number != sequence_number:
            decide(sequence_number, None, 0)
            return
        newest = int(getattr(sender, "_RTCRtpSender__rtp_timestamp", packet.timestamp))
        age = ((newest - packet.timestamp) & 0xFFFFFFFF) / clock_rate
        if age > 2**31 / clock_rate:
            age = 0.0  # a reordered timestamp (B-frames do not exist here): treat it as new
        for _ in range(decide(sequence_number, age, len(packet.payload))):
            await original(sequence_number)

    sender._retransmit = retransmit  # type: ignore[method-assign]
    setattr(sender, _RETRANSMIT_HOOKED, True)


# -- negotiated codecs: RTCRtpTransceiver._codecs ------------------------------------------------
#
# After a description is applied, ``transceiver._codecs`` holds the codecs both sides agreed on,
# in the order aiortc sends with (the first one that is not RTX is the one in use).


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The transceiver's negotiated codecs, preferred first (empty before negotiation)."""
    return list(transceiver._codecs)


# -- transport statistics: RTCDtlsTransport._get_stats ---------------------------------------------
#
# ``RTCPeerConnection.getStats()`` is a coroutine that builds a report for every sender and
# receiver; the liveness check reads one transport's counters several times a second, which
# ``_get_stats()`` returns synchronously (an ``RTCStatsReport`` with one ``transport`` entry).


def transport_stats(transport: RTCDtlsTransport) -> RTCStatsReport:
    """The transport's own statistics (``packetsReceived``, ``packetsSent``, bytes, state)."""
    report: RTCStatsReport = transport._get_stats()
    return report


# -- audio jitter buffer: RTCRtpReceiver.__jitter_buffer ----------------------------------------
#
# ``RTCRtpReceiver.__init__`` gives an audio receiver ``JitterBuffer(capacity=16, prefetch=4)``
# in the name-mangled attribute ``_RTCRtpReceiver__jitter_buffer``; ``_handle_rtp_packet`` calls
# its ``add(packet)`` once per depayloaded packet (``packet._data`` set) and decodes the frame it
# returns, if any, ``(pli_flag, JitterFrame | None)``. The hook wraps ``__init__`` so that every
# audio receiver created afterwards gets a buffer from ``factory`` instead (see
# :mod:`appliance.media.audio.jitter` for why); video receivers keep aiortc's. Tests:
# ``tests/media/test_aiortc_compat_jitter.py``.

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_jitter_lock = threading.Lock()
_jitter_factory: Callable[[], Any] | None = None
_jitter_users = 0
_original_receiver_init: Callable[..., None] | None = None


def audio_jitter_buffer(receiver: RTCRtpReceiver) -> Any:
    """The jitter buffer an audio receiver decodes from (aiortc's or ours)."""
    return getattr(receiver, _JITTER_ATTR)


def install_audio_jitter_buffer(factory: Callable[[], Any]) -> None:
    """From now on, audio receivers take their jitter buffer from ``factory()``.

    Counted: each install needs a :func:`release_audio_jitter_buffer`; the last release puts
    aiortc's own buffer back. Installing again replaces the factory, the wrap stays single."""
    global _jitter_factory, _original_receiver_init, _jitter_users
    with _jitter_lock:
        _jitter_factory = factory
        _jitter_users += 1
        if _original_receiver_init is not None:
            return
        original = RTCRtpReceiver.__init__
        _original_receiver_init = original

        @functools.wraps(original)
        def init(self: RTCRtpReceiver, kind: str, *args: Any, **kwargs: Any) -> None:
            original(self, kind, *args, **kwargs)
            make = _jitter_factory
            if kind == "audio" and make is not None:
                setattr(self, _JITTER_ATTR, make())

        RTCRtpReceiver.__init__ = init  # type: ignore[method-assign]


def release_audio_jitter_buffer() -> None:
    """One user of :func:`install_audio_jitter_buffer` is done."""
    global _jitter_users
    with _jitter_lock:
        _jitter_users = max(0, _jitter_users - 1)
        last = _jitter_users == 0
    if last:
        uninstall_audio_jitter_buffer()


def uninstall_audio_jitter_buffer() -> None:
    """Back to aiortc's own audio jitter buffer for receivers created from now on."""
    global _jitter_factory, _original_receiver_init, _jitter_users
    with _jitter_lock:
        _jitter_users = 0
        if _original_receiver_init is not None:
            RTCRtpReceiver.__init__ = _original_receiver_init  # type: ignore[method-assign]
        _jitter_factory = None
        _original_receiver_init = None
