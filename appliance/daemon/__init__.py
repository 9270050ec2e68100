"""The appliance daemon (``appliance run``): device config → hardware → client → media, driven
by one state machine. See docs/architecture.md for what each module owns.

- :mod:`appliance.daemon.ports` — the vocabulary (call state, link state, events) and the ports
  the machine drives (server link, media, sounds, panel), plus the port modes use to drive it;
- :mod:`appliance.daemon.machine` — :class:`Daemon`, the state machine;
- :mod:`appliance.daemon.modes`, :mod:`~appliance.daemon.serverevents`,
  :mod:`~appliance.daemon.unlock` — behaviour layered on the machine through its port;
- :mod:`appliance.daemon.link`, :mod:`~appliance.daemon.medialink`,
  :mod:`~appliance.daemon.callsignaling` — the real adapters;
- :mod:`appliance.daemon.service` — the wiring of ``appliance run``;
- :mod:`appliance.daemon.config`, :mod:`~appliance.daemon.configchecks` — the device YAML;
- :mod:`appliance.daemon.cli`, :mod:`~appliance.daemon.control` — commands and control socket.

Importing this package imports nothing else: ``appliance press`` must start in a blink.
"""
