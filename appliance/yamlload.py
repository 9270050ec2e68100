"""YAML → typed pydantic models, with every mistake reported as ``file:line: key: problem``.

PyYAML's own constructors forget where a value came from and silently keep the last of two
duplicate keys; we compose the node tree ourselves so that both are caught.

A config is read by a daemon on a board with 512 MB, so reading one is bounded: the file size
(``MAX_FILE_BYTES``), the nesting depth, and the number of values after alias expansion
(``MAX_VALUES``: a few hundred bytes of nested ``*aliases`` otherwise expand to billions of
values). Text that is not UTF-8, control characters and ``.nan``/``.inf`` are refused with the
line they are on, like every other mistake.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from appliance.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]

MAX_FILE_BYTES = 1_048_576
# Values (mappings, sequences, scalars) after alias expansion; real configs have a few thousand.
MAX_VALUES = 100_000
# What YAML may not contain (the complement of its printable set): C0/C1 controls but tab,
# newline, carriage return and NEL, surrogates, U+FFFE and U+FFFF.
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


class _Budget:
    """Counts values as the node tree is expanded (an alias counts as often as it is used)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.left = MAX_VALUES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConfigError(
                f"more than {MAX_VALUES} values after expanding aliases",
                file=self.file,
                line=node.start_mark.line + 1,
                hint="nested *aliases multiply; write the values out",
            )


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    tag = loader.resolve(yaml.ScalarNode, node.value, (True, False))
    if node.tag != tag and node.tag.startswith("tag:yaml.org,2002:"):
        tag = node.tag
    return loader.construct_object(yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark))


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    loc: Loc,
    lines: dict[Loc, int],
    file: str,
    budget: _Budget,
) -> Any:
    budget.spend(node)
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(
                    "YAML merge keys (<<) are not supported",
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            key = _build(loader, key_node, (*loc, "<key>"), {}, file, budget)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    "mapping keys must be plain scalars",
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            skey = str(key) if not isinstance(key, str) else key
            if skey in out:
                raise ConfigError(
                    f"duplicate key '{skey}' (first at line {lines[(*loc, skey)]})",
                    file=file,
                    line=key_node.start_mark.line + 1,
                    key=_dotted((*loc, skey)),
                    hint="a key may appear once in a mapping",
                )
            lines[(*loc, skey)] = key_node.start_mark.line + 1
            out[skey] = _build(loader, value_node, (*loc, skey), lines, file, budget)
            lines[(*loc, skey)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*loc, i), lines, file, budget)
            for i, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    value = _scalar(loader, node)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"{node.value} is not a number a config may hold (NaN and infinities are refused)",
            file=file,
            line=node.start_mark.line + 1,
            key=_dotted(loc) or None,
        )
    return value


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class YamlDocument:
    """A parsed YAML file: its data plus the line of every key and item."""

    def __init__(self, data: Any, lines: dict[Loc, int], file: str) -> None:
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, loc: Loc) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def error(self, loc: Loc, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message, file=self.file, line=self.line_of(loc), key=_dotted(loc) or None, hint=hint
        )

    def validate(self, model: type[M], data: Any | None = None) -> M:
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as err:
            raise self.from_validation(err) from None

    def from_validation(self, err: ValidationError, prefix: Loc = ()) -> ConfigError:
        first = err.errors()[0]
        loc: Loc = (*prefix, *(p for p in first["loc"] if not _is_union_tag(p)))
        kind = first["type"]
        hint = None
        message = first["msg"]
        if kind == "extra_forbidden":
            message = "unknown key"
            hint = _known_keys_hint(err, first)
        elif kind == "missing":
            message = "required key is missing"
        elif "input" in first and kind not in ("missing",):
            value = first["input"]
            if not isinstance(value, Mapping | list):
                message = f"value {value!r} is not valid: {first['msg']}"
        ce = self.error(loc, message, hint)
        return ce


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _known_keys_hint(err: ValidationError, first: Any) -> str | None:
    model = getattr(err, "title", None)
    return f"not a field of {model}" if model else None


def _check_printable(text: str, file: str) -> None:
    bad = _NOT_PRINTABLE.search(text)
    if bad is None:
        return
    line = text.count("\n", 0, bad.start()) + 1
    column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
    raise ConfigError(
        f"control character U+{ord(bad.group()):04X} at column {column} is not allowed",
        file=file,
        line=line,
    )


def parse_yaml_text(text: str, file: str = "<string>") -> YamlDocument:
    _check_printable(text, file)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", file=file) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(
            f"not valid YAML: {err.problem or err.context}",
            file=file,
            line=(mark.line + 1) if mark else None,
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", file=file) from None
    except RecursionError:
        raise ConfigError("nested too deeply", file=file) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is None:
        return YamlDocument({}, {(): 1}, file)
    try:
        data = _build(yaml.SafeLoader(""), node, (), lines, file, _Budget(file))
    except RecursionError:
        raise ConfigError("nested too deeply", file=file) from None
    return YamlDocument(data, lines, file)


def load_yaml(path: str | Path) -> YamlDocument:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err}", file=str(p)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"file is larger than {MAX_FILE_BYTES} bytes", file=str(p))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"not UTF-8: byte 0x{raw[err.start]:02x} at column {column}",
            file=str(p),
            line=line,
            hint="save the file as UTF-8",
        ) from None
    return parse_yaml_text(text, str(p))


def load_model(path: str | Path, model: type[M]) -> M:
    doc = load_yaml(path)
    return doc.validate(model)
