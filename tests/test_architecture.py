"""The package's layering, checked on its source with ``ast`` (docs/architecture.md): no import
circles among ``appliance`` modules except the known ones listed here, and the folder import
rules. Every ``import`` counts, also those inside functions and under ``TYPE_CHECKING``: a
type-only circle is still two modules that cannot be read, moved or tested apart."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "appliance"

# Circles not untangled yet, each with where it is to be fixed. A circle may shrink or go; any
# circle that is not inside one of these fails the test.
KNOWN_CIRCLES: dict[str, frozenset[str]] = {}

# Folder rules: (importing folder, imported folder, why) that are forbidden. ``appliance.x``
# names the folder ``appliance/x/`` (or the module ``appliance/x.py``).
FORBIDDEN: list[tuple[str, str, str]] = [
    ("appliance.daemon", "appliance.server", "the daemon is a client of the server"),
    ("appliance.media", "appliance.server", "media/ is the media engine; it knows no server"),
    ("appliance.media", "appliance.client", "media/ is driven through ports, not the client"),
    ("appliance.media", "appliance.daemon", "media/ is driven by the daemon, not the reverse"),
    ("appliance.client", "appliance.server", "client/ talks to the server over HTTP only"),
    ("appliance.client", "appliance.daemon", "client/ is a library the daemon uses"),
    ("appliance.client", "appliance.media", "client/ carries signaling, not media"),
    ("appliance.hardware", "appliance.daemon", "hardware/ is driven by the daemon"),
    ("appliance.hardware", "appliance.server", "hardware/ knows only pins"),
    ("appliance.hardware", "appliance.client", "hardware/ knows only pins"),
    ("appliance.hardware", "appliance.media", "hardware/ knows only pins"),
    ("appliance.calls", "appliance.server", "calls/ is the shared call model"),
    ("appliance.calls", "appliance.client", "calls/ is the shared call model"),
    ("appliance.calls", "appliance.daemon", "calls/ is the shared call model"),
    ("appliance.server", "appliance.daemon", "the server runs without a device"),
    ("appliance.server", "appliance.client", "the server does not call itself"),
    ("appliance.server", "appliance.hardware", "the server runs without a device"),
]

# Modules whose job is to cross one of those lines, by design.
BRIDGES: dict[str, str] = {
    "appliance.daemon.embedded": "runs the call server inside the daemon (server: embedded)",
    "appliance.daemon.cli": "appliance check also checks a server.yaml",
}

# Known exceptions to FORBIDDEN still to be fixed: (importing module, imported module) → where.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

# The shared modules at the top of the package: every layer may import them, and they import
# only each other (and third-party libraries).
SHARED = {
    "appliance.clock",
    "appliance.errors",
    "appliance.journal",
    "appliance.lazyexports",
    "appliance.sdnotify",
    "appliance.statedir",
    "appliance.tokens",
    "appliance.yamlload",
}


# The call server's layers (docs/architecture.md, "The server"), bottom to top. A module of a
# layer may import the server's modules of its own layer and of the layers listed for it, never
# another one (the API, the realtime hub, the lifecycle rules and the store can be read and
# tested from the bottom up). ``appliance.server.web`` holds no Python.
SERVER = "appliance.server"
SERVER_LAYERS: dict[str, set[str]] = {
    "store": set(),
    "foundation": {"store"},
    "wire": {"store", "foundation"},
    "realtime": {"store", "foundation", "wire"},
    "outbound": {"store", "foundation", "wire"},
    "lifecycle": {"store", "foundation", "wire", "realtime", "outbound"},
    "api": {"store", "foundation", "wire", "realtime", "outbound", "lifecycle"},
    "assembly": {"store", "foundation", "wire", "realtime", "outbound", "lifecycle", "api"},
}
# Modules at the top of appliance/server/: what every layer above the store is handed
# (settings, the context, authentication, metrics, TLS files), and what assembles the server.
SERVER_FOUNDATION = {"settings", "context", "auth", "metrics", "tls"}
SERVER_ASSEMBLY = {"", "app", "cli", "wiring", "web"}


def server_layer(module: str) -> str | None:
    """The layer of a module of ``appliance.server`` (None outside the server)."""
    if not in_folder(module, SERVER):
        return None
    rest = module[len(SERVER) + 1 :].split(".") if module != SERVER else [""]
    if len(rest) > 1 or rest[0] in SERVER_LAYERS:
        return rest[0]
    if rest[0] in SERVER_FOUNDATION:
        return "foundation"
    if rest[0] in SERVER_ASSEMBLY:
        return "assembly"
    raise AssertionError(f"{module}: give it a layer in SERVER_FOUNDATION or SERVER_ASSEMBLY")


def server_layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    broken = []
    for module, targets in sorted(graph.items()):
        layer = server_layer(module)
        if layer is None:
            continue
        for target in sorted(targets):
            wanted = server_layer(target)
            if wanted is not None and wanted != layer and wanted not in SERVER_LAYERS[layer]:
                broken.append(f"{module} ({layer}) imports {target} ({wanted})")
    return broken


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The package's modules that ``name`` imports (the submodule when a name is one)."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("appliance.") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def in_folder(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def test_no_new_import_circles() -> None:
    new = [
        sorted(c)
        for c in circles(import_graph())
        if not any(c <= known for known in KNOWN_CIRCLES.values())
    ]
    assert not new, f"import circles not in KNOWN_CIRCLES: {new}"


def test_folder_import_rules() -> None:
    broken = []
    for module, targets in import_graph().items():
        for target in sorted(targets):
            for importer, imported, why in FORBIDDEN:
                if in_folder(module, importer) and in_folder(target, imported):
                    if (module, target) not in KNOWN_EXCEPTIONS and module not in BRIDGES:
                        broken.append(f"{module} imports {target} ({why})")
    assert not broken, "\n".join(broken)


def test_server_layers() -> None:
    assert not server_layer_breaks(import_graph()), "\n".join(server_layer_breaks(import_graph()))


def test_every_server_module_has_a_layer() -> None:
    for module in import_graph():
        server_layer(module)


def test_shared_modules_import_only_shared_modules() -> None:
    graph = import_graph()
    assert SHARED <= set(graph), SHARED - set(graph)
    broken = {m: sorted(graph[m] - SHARED) for m in SHARED if graph[m] - SHARED}
    assert not broken, broken


def test_the_checker_sees_a_circle_and_a_broken_rule() -> None:
    """The checks can fail: a made-up graph with a circle and a forbidden import."""
    graph = {
        "appliance.a": {"appliance.b"},
        "appliance.b": {"appliance.c"},
        "appliance.c": {"appliance.a"},
        "appliance.d": {"appliance.a"},
    }
    assert circles(graph) == [frozenset({"appliance.a", "appliance.b", "appliance.c"})]
    assert in_folder("appliance.hardware.panel", "appliance.hardware")
    assert not in_folder("appliance.hardwarechecks", "appliance.hardware")
    upward = {
        "appliance.server.store.users": {"appliance.server.api.replies"},
        "appliance.server.api.replies": {"appliance.server.context"},
        "appliance.server.lifecycle.ringer": {"appliance.server.realtime.hub"},
    }
    assert server_layer_breaks(upward) == [
        "appliance.server.store.users (store) imports appliance.server.api.replies (api)"
    ]


def test_known_lists_are_not_stale() -> None:
    """An allowed circle or exception that no longer exists is removed from the list."""
    graph = import_graph()
    found = circles(graph)
    stale = [name for name, known in KNOWN_CIRCLES.items() if not any(c & known for c in found)]
    assert not stale, f"KNOWN_CIRCLES entries that are gone: {stale}"
    gone = [pair for pair in KNOWN_EXCEPTIONS if pair[1] not in graph.get(pair[0], set())]
    assert not gone, f"KNOWN_EXCEPTIONS entries that are gone: {gone}"
