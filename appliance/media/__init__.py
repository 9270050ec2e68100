"""Media engine: aiortc sessions, H.264 passthrough video sources, ALSA audio (``audio/``)."""
